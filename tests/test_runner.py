"""The Runner contract (the lab's RunnerV3): eval schedule, logging, best-model saving on strict
improvement, sample-weighted evaluation, histories, state round trips. Tiny synthetic models."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.data import TensorLoader
from cnnlab.errors import UserError
from cnnlab.train.checkpoint import load_checkpoint
from cnnlab.train.metric import Accuracy
from cnnlab.train.runner import Runner
from train_helpers import load_json_strict


class Set(torch.utils.data.Dataset):
    def __init__(self, n, d=6, k=3, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.images = torch.randn(n, d, generator=g)
        w = torch.randn(d, k, generator=g)
        self.labels = (self.images @ w).argmax(1)

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.images[i], self.labels[i]


def make_runner(seed=0, lr=0.1, metric=None, **kw):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    return Runner(model, opt, F.cross_entropy, metric or Accuracy(), device="cpu",
                  progress=False, **kw)


def bare_loop(seed, train, epochs, batch_size, lr=0.1, data_seed=7):
    """The same training written by hand: per-step losses and final weights."""
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3))
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(data_seed)
    loader = torch.utils.data.DataLoader(train, batch_size=batch_size, shuffle=True, generator=gen)
    losses, sizes = [], []
    for _ in range(epochs):
        for x, y in loader:
            loss = F.cross_entropy(model(x), y)
            losses.append(loss.item())
            sizes.append(len(y))
            opt.zero_grad()
            loss.backward()
            opt.step()
    return losses, sizes, model.state_dict()


def test_eval_and_log_schedule_match_the_lab(tmp_path, capsys):
    # 1000 samples, batch 64 -> 16 steps an epoch, 80 steps in 5 epochs, as the lab's LeNet run.
    train, dev = Set(1000), Set(200, seed=1)
    r = make_runner()
    r.train(TensorLoader(train, 64, shuffle=True, generator=torch.Generator().manual_seed(7)),
            TensorLoader(dev, 64), num_epochs=5, log_steps=15, eval_steps=15,
            save_path=tmp_path / "best.pt")
    assert [s for s, _ in r.dev_scores] == [15, 30, 45, 60, 75, 79]
    assert [s for s, _ in r.dev_losses] == [15, 30, 45, 60, 75, 79]
    out = capsys.readouterr().out
    logged = [line for line in out.splitlines() if line.startswith("[Train] epoch")]
    assert [line.split("step: ")[1].split("/")[0] for line in logged] == ["0", "15", "30", "45", "60", "75"]
    assert logged[0].startswith("[Train] epoch: 0/5, step: 0/80, loss: ")
    assert out.count("[Evaluate] dev score") == 6
    assert out.rstrip().endswith("[Train] Training done!")
    assert r.global_step == 80 and r.epoch == 5


def test_runner_equals_a_hand_written_loop_and_records_history(tmp_path):
    train = Set(100)
    losses, sizes, weights = bare_loop(0, train, epochs=3, batch_size=32)
    r = make_runner(0)
    loader = torch.utils.data.DataLoader(train, batch_size=32, shuffle=True,
                                         generator=torch.Generator().manual_seed(7))
    hist = r.train(loader, None, num_epochs=3, log_steps=0, eval_steps=0, save_path=None)
    assert [s for s, _ in r.train_step_losses] == list(range(12))
    assert [v for _, v in r.train_step_losses] == pytest.approx(losses, abs=1e-6)
    for k, v in weights.items():
        torch.testing.assert_close(r.model.state_dict()[k], v, rtol=0, atol=1e-6)
    # epoch losses: sample-weighted means over the epoch's steps (last batch has 4 samples)
    for e in range(3):
        ls, ns = losses[4 * e: 4 * e + 4], sizes[4 * e: 4 * e + 4]
        assert r.train_epoch_losses[e] == pytest.approx(sum(l * n for l, n in zip(ls, ns)) / sum(ns))
    assert hist["train_epoch_losses"] == r.train_epoch_losses
    assert all(type(v) is float for _, v in r.train_step_losses)
    # written as JSON with plain numbers
    r.write_history(tmp_path / "history.json")
    back = load_json_strict(tmp_path / "history.json")
    assert back["train_step_losses"][3] == [3, r.train_step_losses[3][1]]
    assert back["dev_scores"] == [] and back["best_score"] is None


def test_tensor_loader_and_dataloader_train_identically():
    train, dev = Set(90), Set(30, seed=1)
    results = []
    for make in (lambda ds, bs, **kw: TensorLoader(ds, bs, **kw),
                 lambda ds, bs, **kw: torch.utils.data.DataLoader(ds, bs, **kw)):
        r = make_runner(3)
        r.train(make(train, 16, shuffle=True, generator=torch.Generator().manual_seed(1)),
                make(dev, 16), num_epochs=2, log_steps=0, eval_steps=4, save_path=None)
        results.append((r.history(), r.model.state_dict()))
    assert results[0][0] == results[1][0]
    for k in results[0][1]:
        assert torch.equal(results[0][1][k], results[1][1][k])


class ScriptedScore:
    """A metric returning scores from a script, snapshotting the weights it was asked about."""

    def __init__(self, scores, model_ref):
        self.scores, self.model_ref, self.snapshots = list(scores), model_ref, []

    def reset(self):
        pass

    def update(self, outputs, labels):
        pass

    def accumulate(self):
        self.snapshots.append({k: v.clone() for k, v in self.model_ref[0].state_dict().items()})
        return self.scores.pop(0)


def test_best_model_saved_only_on_strict_improvement_never_nan(tmp_path, monkeypatch):
    scores = [0.5, 0.5, 0.7, float("nan"), 0.6, 0.7, 0.65]
    ref = []
    r = make_runner(metric=ScriptedScore(scores, ref))
    ref.append(r.model)
    saved = []
    original = r.save_model
    monkeypatch.setattr(r, "save_model", lambda path, **kw: saved.append(r.global_step - 1) or original(path, **kw))
    best = tmp_path / "best.pt"
    # 7 evaluations: steps 2, 4, 6, 8, 10 and the last step 11 (12 steps) ... plus none more
    r.train(TensorLoader(Set(48), 4, shuffle=True, generator=torch.Generator().manual_seed(0)),
            TensorLoader(Set(8, seed=1), 4), num_epochs=1, log_steps=0, eval_steps=2, save_path=best)
    steps = [s for s, _ in r.dev_scores]
    assert steps == [2, 4, 6, 8, 10, 11]
    # scores 0.5 (save), 0.5 (equal: no), 0.7 (save), nan (no), 0.6 (no), 0.7 (equal: no)
    assert saved == [2, 6]
    assert r.best_score == 0.7 and r.best_step == 6
    payload = load_checkpoint(best)
    snap = r.metric.snapshots[2]   # weights evaluated at step 6
    for k, v in snap.items():
        assert torch.equal(payload["state_dict"][k], v)
    assert math.isnan(r.dev_scores[3][1])
    assert r.history()["best_score"] == 0.7


def test_first_evaluation_counts_as_an_improvement_even_at_zero(tmp_path):
    ref = []
    r = make_runner(metric=ScriptedScore([0.0, 0.0], ref))
    ref.append(r.model)
    r.train(TensorLoader(Set(8), 4), TensorLoader(Set(4), 4), num_epochs=2, log_steps=0,
            eval_steps=2, save_path=tmp_path / "best.pt")
    assert (tmp_path / "best.pt").is_file() and r.best_step == 2


def test_evaluate_is_sample_weighted_with_an_uneven_last_batch():
    ds = Set(10, seed=4)
    r = make_runner(5)
    score, loss = r.evaluate(TensorLoader(ds, 4))          # batches of 4, 4, 2
    with torch.no_grad():
        logits = r.model(ds.images)
        per_sample = F.cross_entropy(logits, ds.labels, reduction="none")
    assert loss == pytest.approx(per_sample.mean().item(), abs=1e-6)
    batch_mean = sum(per_sample[a:b].mean().item() for a, b in ((0, 4), (4, 8), (8, 10))) / 3
    assert abs(batch_mean - loss) > 1e-4                  # the lab's batch average differs here
    assert score == pytest.approx((logits.argmax(1) == ds.labels).float().mean().item())
    assert r.dev_scores == []                              # no global_step: not recorded


def test_predict_uses_eval_mode_and_restores_training_mode():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 4), nn.BatchNorm1d(4), nn.Linear(4, 3))
    r = Runner(model, torch.optim.SGD(model.parameters(), lr=0.1), F.cross_entropy, Accuracy(),
               device="cpu", progress=False)
    x = torch.randn(5, 6)
    model.train()
    out = r.predict(x)
    assert model.training
    model.eval()
    torch.testing.assert_close(out, model(x))


def test_save_load_and_state_dict_round_trip(tmp_path):
    r = make_runner(1)
    r.train(TensorLoader(Set(40), 8, shuffle=True, generator=torch.Generator().manual_seed(0)),
            TensorLoader(Set(16, seed=1), 8), num_epochs=2, log_steps=0, eval_steps=3,
            save_path=None)
    r.save_model(tmp_path / "m.pt")
    state = r.state_dict()
    other = make_runner(2)
    other.load_model(tmp_path / "m.pt")
    other.load_state_dict(state)
    for k, v in r.model.state_dict().items():
        assert torch.equal(other.model.state_dict()[k], v)
    assert other.history() == r.history()
    assert (other.global_step, other.epoch, other.best_step) == (r.global_step, r.epoch, r.best_step)
    wrong = Runner(nn.Linear(6, 3), torch.optim.SGD(nn.Linear(6, 3).parameters(), lr=1),
                   F.cross_entropy, Accuracy(), device="cpu", progress=False)
    with pytest.raises(UserError, match="does not fit"):
        wrong.load_model(tmp_path / "m.pt")


def test_scheduler_steps_once_per_epoch():
    r = make_runner(lr=1.0)
    r.scheduler = torch.optim.lr_scheduler.StepLR(r.optimizer, step_size=1, gamma=0.5)
    r.train(TensorLoader(Set(16), 8), None, num_epochs=3, log_steps=0, eval_steps=0, save_path=None)
    assert r.optimizer.param_groups[0]["lr"] == pytest.approx(0.125)


@pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present")
def test_cuda_without_gpu_is_a_user_error():
    with pytest.raises(UserError, match="no CUDA GPU"):
        make_runner().__class__(nn.Linear(2, 2), None, F.cross_entropy, Accuracy(), device="cuda")


def test_lab_init_is_paddles_default_initialisation():
    from cnnlab.models import build_model
    from cnnlab.train.init import lab_init_

    torch.manual_seed(0)
    lenet = lab_init_(build_model("lenet"), "lenet")
    w = lenet.conv5.weight                       # [120,16,5,5]: Xavier uniform bound
    bound = math.sqrt(6 / (16 * 25 + 120 * 25))
    assert w.abs().max() <= bound and w.abs().max() > 0.95 * bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert all(float(m.bias.detach().abs().max()) == 0 for m in (lenet.conv1, lenet.conv5, lenet.linear6))
    resnet = lab_init_(build_model("resnet18"), "resnet18")
    w = resnet.layer1[0].conv1.weight            # [64,64,3,3]: Normal(0, sqrt(2 / (9*64)))
    assert w.std().item() == pytest.approx(math.sqrt(2 / (9 * 64)), rel=0.03)
    assert float(resnet.conv1.bias.detach().abs().max()) == 0
    assert float(resnet.fc.bias.detach().abs().max()) == 0
    fc_bound = math.sqrt(6 / (512 + 10))
    assert resnet.fc.weight.abs().max() <= fc_bound
