"""The lab's Paddle weights in and out (`cnnlab.interop.paddle`), without Paddle.

Paddle files are made here the way `paddle.save(model.state_dict(), path)` makes them: the standard
pickle module dumping a plain dict of float32 ndarrays plus the "StructuredToParameterName@@" dict
(protocol 4 by default). Their names and shapes come from the lab's code (Model_LeNet, Paddle_LeNet,
Model_ResNet18, paddle.vision resnet18) and the references are written independently of cnnlab:
functional torch forward passes over the Paddle-layout arrays, and torchvision's resnet18.
"""

from __future__ import annotations

import os
import pickle
import pickletools
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision

from cnnlab.cli import main
from cnnlab.errors import UserError
from cnnlab.interop import (
    UnsafePickleError,
    detect_layout,
    load_paddle_weights,
    paddle_state_dict,
    read_pdparams,
    write_pdparams,
)
from cnnlab.models import build_model
from cnnlab.train.checkpoint import load_model, model_payload, save_checkpoint
from train_helpers import load_json_strict

NAME_TABLE = "StructuredToParameterName@@"


# ----------------------------------------------------------------------------------------------
# Paddle-side fixtures, written from the lab's code


def paddle_save(arrays: dict, path, protocol=4):
    """What paddle.save(state_dict, path) writes (Paddle's _legacy_save), with the stdlib pickle."""
    saved = {k: np.asarray(v, dtype=np.float32) for k, v in arrays.items()}
    saved[NAME_TABLE] = {k: f"param_{i}.w_0" for i, k in enumerate(arrays)}
    with open(path, "wb") as f:
        pickle.dump(saved, f, protocol=protocol)
    return path


def lab_lenet_arrays(rng, in_channels=1, num_classes=10, bias_column=True):
    """Model_LeNet's state dict (custom Conv2D bias [P,1]); Paddle_LeNet's with bias_column=False.

    Shapes as the lab prints them: conv2d [6,1,5,5] [6,1] ... linear [120,84] [84]."""
    out = {}
    for name, (p, d) in {"conv1": (6, in_channels), "conv3": (16, 6), "conv5": (120, 16)}.items():
        out[f"{name}.weight"] = rng.standard_normal((p, d, 5, 5)) * 0.2
        out[f"{name}.bias"] = rng.standard_normal((p, 1) if bias_column else (p,)) * 0.2
    for name, (i, o) in {"linear6": (120, 84), "linear7": (84, num_classes)}.items():
        out[f"{name}.weight"] = rng.standard_normal((i, o)) * 0.2  # Paddle Linear: [in, out]
        out[f"{name}.bias"] = rng.standard_normal((o,)) * 0.2
    return {k: v.astype(np.float32) for k, v in out.items()}


def _bn(out, prefix, c, rng):
    out[f"{prefix}.weight"] = 1 + 0.1 * rng.standard_normal(c)
    out[f"{prefix}.bias"] = 0.1 * rng.standard_normal(c)
    out[f"{prefix}._mean"] = 0.1 * rng.standard_normal(c)
    out[f"{prefix}._variance"] = rng.uniform(0.5, 1.5, c)


def _he(rng, shape):
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(np.sqrt(2.0 / np.prod(shape[1:])))


def lab_resnet_arrays(rng, in_channels=1, num_classes=10):
    """Model_ResNet18's state dict: net.0.0 conv (bias), net.0.1 BN, net.1-4 ResBlocks, net.7."""
    out = {"net.0.0.weight": _he(rng, (64, in_channels, 7, 7)), "net.0.0.bias": 0.1 * rng.standard_normal(64)}
    _bn(out, "net.0.1", 64, rng)
    for k, (cin, cout) in enumerate([(64, 64), (64, 128), (128, 256), (256, 512)], start=1):
        for j in range(2):
            p, c_in = f"net.{k}.{j}", cin if j == 0 else cout
            out[f"{p}.conv1.weight"] = _he(rng, (cout, c_in, 3, 3))
            out[f"{p}.conv2.weight"] = _he(rng, (cout, cout, 3, 3))
            if j == 0 and k > 1:  # in_channels != out_channels or stride != 1
                out[f"{p}.shortcut.weight"] = _he(rng, (cout, c_in, 1, 1))
            _bn(out, f"{p}.bn1", cout, rng)
            _bn(out, f"{p}.bn2", cout, rng)
            if j == 0 and k > 1:
                _bn(out, f"{p}.bn3", cout, rng)
    out["net.7.weight"] = 0.05 * rng.standard_normal((512, num_classes))
    out["net.7.bias"] = 0.05 * rng.standard_normal(num_classes)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def lab_lenet_forward(a, x):
    """Model_LeNet.forward over Paddle-layout arrays (bias [P,1] or [P], Linear [in,out])."""
    t = {k: torch.from_numpy(v) for k, v in a.items()}
    x = F.relu(F.conv2d(x, t["conv1.weight"], t["conv1.bias"].reshape(-1)))
    x = F.max_pool2d(x, 2, 2)
    x = F.relu(F.conv2d(x, t["conv3.weight"], t["conv3.bias"].reshape(-1)))
    x = F.avg_pool2d(x, 2, 2)
    x = F.relu(F.conv2d(x, t["conv5.weight"], t["conv5.bias"].reshape(-1)))
    x = x.squeeze(3).squeeze(2)
    x = F.relu(x @ t["linear6.weight"] + t["linear6.bias"])
    return x @ t["linear7.weight"] + t["linear7.bias"]


def lab_resnet_forward(a, x, use_residual=True):
    """Model_ResNet18.forward (eval mode) over Paddle-layout arrays, as the lab's code reads."""
    t = {k: torch.from_numpy(v) for k, v in a.items()}

    def bn(y, p):
        return F.batch_norm(y, t[f"{p}._mean"], t[f"{p}._variance"], t[f"{p}.weight"], t[f"{p}.bias"],
                            training=False, eps=1e-5)

    x = F.relu(bn(F.conv2d(x, t["net.0.0.weight"], t["net.0.0.bias"], stride=2, padding=3), "net.0.1"))
    x = F.max_pool2d(x, 3, 2, 1)
    for k in range(1, 5):
        for j in range(2):
            p = f"net.{k}.{j}"
            stride = 2 if (k > 1 and j == 0) else 1
            y = F.relu(bn(F.conv2d(x, t[f"{p}.conv1.weight"], stride=stride, padding=1), f"{p}.bn1"))
            y = bn(F.conv2d(y, t[f"{p}.conv2.weight"], padding=1), f"{p}.bn2")
            if use_residual:
                s = x
                if f"{p}.shortcut.weight" in t:
                    s = bn(F.conv2d(x, t[f"{p}.shortcut.weight"], stride=stride), f"{p}.bn3")
                y = y + s
            x = F.relu(y)
    x = F.adaptive_avg_pool2d(x, 1).flatten(1)
    return x @ t["net.7.weight"] + t["net.7.bias"]


def randomize_bn(model, seed=0):
    """Non-default BN statistics, so that a lost or swapped _mean/_variance changes the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
            m.weight.data.copy_(1 + 0.1 * torch.randn(m.num_features, generator=g))
            m.bias.data.copy_(0.1 * torch.randn(m.num_features, generator=g))
            m.num_batches_tracked.fill_(123)
    return model


def paddle_vision_arrays(tv) -> dict:
    """paddle.vision's ResNet state dict for torchvision model `tv`: torchvision's names, BN
    _mean/_variance, no num_batches_tracked, fc weight [in, out]."""
    out = {}
    for k, v in tv.state_dict().items():
        if k.endswith("num_batches_tracked"):
            continue
        k = k.replace("running_mean", "_mean").replace("running_var", "_variance")
        out[k] = (v.T if k == "fc.weight" else v).numpy().copy()
    return out


def make(name, seed, **kwargs):
    if name == "lenet":
        kwargs.setdefault("conv_impl", "native")  # same module classes; fastest CPU path
    torch.manual_seed(seed)
    return randomize_bn(build_model(name, **kwargs), seed).eval()


@pytest.fixture(scope="module")
def rng():
    return np.random.default_rng(5)


@pytest.fixture(scope="module")
def lab_resnet():
    """One Model_ResNet18 state dict for the whole module (11 M values take a while to draw)."""
    return lab_resnet_arrays(np.random.default_rng(6))


# ----------------------------------------------------------------------------------------------
# The lab's arrays, as the lab prints and counts them


def test_hand_made_lab_resnet_has_the_lab_parameter_count(lab_resnet):
    # paddle.summary of Model_ResNet18(in_channels=1, num_classes=10): Total params 11,185,034.
    assert sum(v.size for v in lab_resnet.values()) == 11_185_034


# ----------------------------------------------------------------------------------------------
# Reading files written exactly like paddle.save


@pytest.mark.parametrize("protocol", [4, 2])
def test_reads_a_file_written_like_paddle_save(tmp_path, rng, protocol):
    arrays = lab_lenet_arrays(rng)
    path = paddle_save(arrays, tmp_path / "best_model.pdparams", protocol=protocol)
    got = read_pdparams(path)
    assert list(got) == list(arrays)  # the name table is dropped, the order kept
    for k in arrays:
        assert got[k].dtype == np.float32 and np.array_equal(got[k], arrays[k])

    model = make("lenet", 1)
    info = load_paddle_weights(model, path)
    assert info.layout == "lab" and info.tensors == 10 and info.values == 61_706
    x = torch.randn(3, 1, 32, 32)
    torch.testing.assert_close(model(x), lab_lenet_forward(arrays, x), rtol=1e-5, atol=1e-5)


def test_reads_numpy1_pickles(tmp_path, rng):
    # numpy 1.x names its helper numpy.core.multiarray._reconstruct; protocol 2 spells it as text.
    arrays = lab_lenet_arrays(rng)
    data = pickle.dumps({**arrays, NAME_TABLE: {}}, protocol=2)
    data = data.replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")
    assert b"numpy.core.multiarray\n_reconstruct" in data
    (tmp_path / "old.pdparams").write_bytes(data)
    got = read_pdparams(tmp_path / "old.pdparams")
    assert all(np.array_equal(got[k], arrays[k]) for k in arrays)


def test_reads_ordered_dict_and_name_ndarray_tuples(tmp_path, rng):
    # paddle >= 2.1 pickles bare Tensors as (name, ndarray); older state dicts were OrderedDicts.
    from collections import OrderedDict

    arrays = lab_lenet_arrays(rng, bias_column=False)
    obj = OrderedDict((k, (f"t_{i}", v)) for i, (k, v) in enumerate(arrays.items()))
    (tmp_path / "t.pdparams").write_bytes(pickle.dumps(obj, protocol=4))
    got = read_pdparams(tmp_path / "t.pdparams")
    assert all(np.array_equal(got[k], arrays[k]) for k in arrays)


# ----------------------------------------------------------------------------------------------
# Layout rules, one by one, on hand-made dicts


def test_lab_lenet_bias_column_and_transposed_linear(rng):
    a = lab_lenet_arrays(rng)
    model = make("lenet", 0)
    assert load_paddle_weights(model, a).layout == "lab"
    assert torch.equal(model.conv1.weight, torch.from_numpy(a["conv1.weight"]))
    assert torch.equal(model.conv3.bias, torch.from_numpy(a["conv3.bias"][:, 0]))  # [P,1] -> [P]
    assert torch.equal(model.linear6.weight, torch.from_numpy(a["linear6.weight"]).T)  # [in,out]
    assert model.linear6.weight.shape == (84, 120)
    assert torch.equal(model.linear7.bias, torch.from_numpy(a["linear7.bias"]))


def test_paddle_lenet_bias_vector_loads_into_both_lenets(rng):
    a = lab_lenet_arrays(rng, bias_column=False)
    x = torch.randn(2, 1, 32, 32)
    for name in ("lenet", "lenet-native"):
        model = make(name, 0)
        assert load_paddle_weights(model, a).layout == "paddle-lenet"
        assert torch.equal(model.conv5.bias, torch.from_numpy(a["conv5.bias"]))
        torch.testing.assert_close(model(x), lab_lenet_forward(a, x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name,use_residual", [("resnet18", True), ("resnet18-plain", False)])
def test_lab_resnet_names_and_bn_statistics(lab_resnet, name, use_residual):
    a = lab_resnet
    model = make(name, 0)
    assert detect_layout(model, a) == "lab"
    load_paddle_weights(model, a)
    sd = model.state_dict()

    def same(ours, theirs, transpose=False):
        t = torch.from_numpy(a[theirs])
        assert torch.equal(sd[ours], t.T if transpose else t), (ours, theirs)

    same("conv1.weight", "net.0.0.weight")
    same("conv1.bias", "net.0.0.bias")
    same("bn1.running_mean", "net.0.1._mean")
    same("bn1.running_var", "net.0.1._variance")
    same("layer1.1.conv2.weight", "net.1.1.conv2.weight")
    same("layer3.0.bn2.bias", "net.3.0.bn2.bias")
    same("layer2.0.downsample.0.weight", "net.2.0.shortcut.weight")
    same("layer4.0.downsample.1.running_var", "net.4.0.bn3._variance")
    same("layer4.0.downsample.1.weight", "net.4.0.bn3.weight")
    same("fc.weight", "net.7.weight", transpose=True)
    assert int(sd["bn1.num_batches_tracked"]) == 123  # Paddle has none: the model's value stays

    x = torch.randn(1, 1, 32, 32)
    torch.testing.assert_close(model(x), lab_resnet_forward(a, x, use_residual), rtol=1e-4, atol=1e-4)


def test_paddle_vision_resnet18_against_torchvision():
    torch.manual_seed(3)
    tv = randomize_bn(torchvision.models.resnet18(num_classes=10), 3).eval()
    a = paddle_vision_arrays(tv)
    model = make("resnet18", 0, in_channels=3, stem_bias=False)
    assert load_paddle_weights(model, a).layout == "paddle-vision"
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(model(x), tv(x), rtol=1e-5, atol=1e-5)


def test_export_writes_the_paddle_layout():
    model = make("lenet", 0)
    a, layout = paddle_state_dict(model)
    assert layout == "lab"
    assert a["conv1.bias"].shape == (6, 1) and np.array_equal(a["conv1.bias"][:, 0], model.conv1.bias.detach().numpy())
    assert a["linear6.weight"].shape == (120, 84)
    assert np.array_equal(a["linear6.weight"], model.linear6.weight.detach().numpy().T)

    a, layout = paddle_state_dict(make("lenet-native", 0))
    assert layout == "paddle-lenet" and a["conv1.bias"].shape == (6,)

    model = make("resnet18", 0)
    a, layout = paddle_state_dict(model)
    assert layout == "lab" and len(a) == 103
    assert not any("num_batches_tracked" in k or "running" in k for k in a)
    assert np.array_equal(a["net.2.0.bn3._mean"], model.layer2[0].downsample[1].running_mean.numpy())
    assert a["net.7.weight"].shape == (512, 10)
    assert sum(v.size for v in a.values()) == 11_185_034  # the lab's total

    a, layout = paddle_state_dict(make("resnet18", 0, stem_bias=False))
    assert layout == "paddle-vision" and "conv1.bias" not in a and "layer2.0.downsample.1._mean" in a
    with pytest.raises(UserError, match="stem_bias=False"):
        paddle_state_dict(make("resnet18", 0, stem_bias=False), "lab")
    with pytest.raises(UserError, match="layout 'lab'"):
        paddle_state_dict(make("resnet18", 0), "paddle-vision")


# ----------------------------------------------------------------------------------------------
# Round trip: export -> import gives the same outputs


@pytest.mark.parametrize("name,kwargs,layout", [
    ("lenet", {}, "lab"),
    ("lenet-native", {}, "paddle-lenet"),
    ("resnet18", {}, "lab"),
    ("resnet18-plain", {}, "lab"),
    ("resnet18", {"stem_bias": False}, "paddle-vision"),
])
def test_round_trip_gives_identical_outputs(tmp_path, name, kwargs, layout):
    src = make(name, 0, **kwargs)
    path = tmp_path / "w.pdparams"
    assert write_pdparams(src, path).layout == layout

    # The file is what paddle.save writes: a plain dict of float32 arrays + the name table, and
    # it names only numpy's helpers, by paths numpy 1.x and 2.x both import.
    with open(path, "rb") as f:
        raw = pickle.load(f)
    assert isinstance(raw, dict) and isinstance(raw.pop(NAME_TABLE), dict)
    assert all(type(v) is np.ndarray and v.dtype == np.float32 for v in raw.values())
    data = path.read_bytes()
    assert data[:2] == b"\x80\x04"  # protocol 4, paddle.save's default
    strings = [arg for op, arg, _ in pickletools.genops(data) if op.name == "SHORT_BINUNICODE"]
    assert "numpy.core.multiarray" in strings and "numpy._core.multiarray" not in strings

    dst = make(name, 1, **kwargs)
    info = load_paddle_weights(dst, path)
    assert info.layout == layout
    x = torch.randn(1, 1, 32, 32)
    assert torch.equal(src(x), dst(x))


def test_written_file_matches_the_lab_state_dict(tmp_path, lab_resnet):
    # Exporting weights imported from a lab file gives back the lab's own names, shapes and values.
    a = lab_resnet
    model = make("resnet18", 0)
    load_paddle_weights(model, a)
    write_pdparams(model, tmp_path / "again.pdparams")
    b = read_pdparams(tmp_path / "again.pdparams")
    assert sorted(b) == sorted(a)
    assert all(np.array_equal(a[k], b[k]) for k in a)


# ----------------------------------------------------------------------------------------------
# Safety and clear errors


class _RunsCode:
    def __init__(self, call, arg):
        self.call, self.arg = call, arg

    def __reduce__(self):
        return self.call, (self.arg,)


@pytest.mark.parametrize("attack", ["os.system", "exec"])
def test_pickle_that_runs_code_is_refused(tmp_path, rng, attack):
    marker = tmp_path / "pwned"
    if attack == "os.system":
        payload = _RunsCode(os.system, f"touch {marker}")
    else:
        payload = _RunsCode(exec, f"open({str(marker)!r}, 'w').write('x')")
    arrays = {**lab_lenet_arrays(rng), "linear7.bias": payload}
    path = tmp_path / "evil.pdparams"
    path.write_bytes(pickle.dumps(arrays, protocol=4))

    with pytest.raises(UnsafePickleError, match=r"refusing the global `(posix|os|builtins)\.(system|exec)`") as err:
        read_pdparams(path)
    assert str(path) in str(err.value) and "nothing was executed" in str(err.value)
    assert not marker.exists()
    with pytest.raises(UserError):
        load_paddle_weights(make("lenet", 0), path)
    assert not marker.exists()

    if attack == "exec":  # control: the plain pickle module does run it
        pickle.loads(path.read_bytes())
        assert marker.exists()


@pytest.mark.parametrize("data,reason", [
    # allowed globals called with arguments a .pdparams file never has (hand-written opcodes)
    (b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x05\x00\x00\x00rot13\x86R.", "encoding 'rot13'"),
    (b"\x80\x02c__builtin__\nbytes\nJ\x00\x00\x00\x40\x85R.", "non-sequence"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncbuiltins\nlist\n" b"K\x00\x85C\x01b\x87R.",
     "`builtins.list`"),
    (b"\x80\x02cnumpy.core.multiarray\n_reconstruct\nccollections\nOrderedDict\n"
     b"K\x00\x85C\x01b\x87R.", "array of type"),
])
def test_allowed_globals_refuse_unusual_arguments(tmp_path, data, reason):
    path = tmp_path / "odd.pdparams"
    path.write_bytes(data)
    with pytest.raises(UserError, match=reason.replace("(", r"\(")):
        read_pdparams(path)


def test_truncated_empty_and_garbage_files(tmp_path, rng):
    good = paddle_save(lab_lenet_arrays(rng), tmp_path / "good.pdparams").read_bytes()
    cases = {"truncated": good[: len(good) // 2], "empty": b"", "garbage": b"hello, not a pickle\n"}
    for name, data in cases.items():
        path = tmp_path / f"{name}.pdparams"
        path.write_bytes(data)
        with pytest.raises(UserError, match="not a readable .pdparams file") as err:
            read_pdparams(path)
        assert str(path) in str(err.value), name
    with pytest.raises(UserError, match="not found"):
        read_pdparams(tmp_path / "missing.pdparams")


def test_file_of_another_model_is_refused_with_the_closest_layout(tmp_path, lab_resnet):
    path = paddle_save(lab_resnet, tmp_path / "resnet.pdparams")
    model = make("lenet", 0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError) as err:
        load_paddle_weights(model, path)
    # Both LeNet layouts miss all 10 tensors; the first listed, 'lab', is named.
    assert str(err.value) == (
        f"{path} fits no Paddle layout of this lenet model: closest is 'lab' (the lab's "
        "Model_LeNet (custom Conv2D, bias [P,1])): missing conv1.weight, conv1.bias, conv3.weight, "
        "conv3.bias, conv5.weight (+5 more); unexpected net.0.0.weight, net.0.0.bias, "
        "net.0.1.weight, net.0.1.bias, net.0.1._mean (+98 more); this file looks like the lab's "
        "Model_ResNet18: use --model resnet18 or resnet18-plain")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # unchanged


def test_mismatch_reports_paddle_and_our_names(lab_resnet):
    a = dict(lab_resnet)
    del a["net.2.0.bn3._variance"]
    a["net.9.weight"] = np.zeros(3, np.float32)
    with pytest.raises(UserError) as err:
        load_paddle_weights(make("resnet18", 0, num_classes=5), a, source="lab")
    msg = str(err.value)
    assert "missing net.2.0.bn3._variance (ours layer2.0.downsample.1.running_var)" in msg
    assert "unexpected net.9.weight" in msg
    assert "net.7.weight [512,10], needs [512,5] (ours fc.weight [5,512])" in msg

    with pytest.raises(UserError, match="stem_bias=True"):
        load_paddle_weights(make("resnet18", 0, stem_bias=False), lab_resnet)


def test_nested_training_checkpoint_is_refused(tmp_path, rng):
    path = tmp_path / "both.pdparams"
    path.write_bytes(pickle.dumps({"model": lab_lenet_arrays(rng), "epoch": 3}, protocol=4))
    with pytest.raises(UserError, match="not a model state dict"):
        read_pdparams(path)


# ----------------------------------------------------------------------------------------------
# Command line


def _one_line_error(capsys):
    err = capsys.readouterr().err.strip()
    assert err and "\n" not in err and "Traceback" not in err
    return err


def test_convert_paddle_writes_a_usable_checkpoint(tmp_path, rng, capsys):
    a = lab_lenet_arrays(rng, num_classes=7)
    src = paddle_save(a, tmp_path / "best_model.pdparams")
    out = tmp_path / "lenet.ckpt"
    assert main(["convert-paddle", str(src), "--model", "lenet", "--out", str(out)]) == 0
    assert "Model_LeNet" in capsys.readouterr().out
    model, payload = load_model(out, conv_impl="native")
    assert payload["model"] == {"name": "lenet", "kwargs": {"in_channels": 1, "num_classes": 7}}
    assert payload["config"]["source"]["layout"] == "lab"
    x = torch.randn(2, 1, 32, 32)
    torch.testing.assert_close(model.eval()(x), lab_lenet_forward(a, x), rtol=1e-5, atol=1e-5)


def test_recorded_sha256_is_of_the_bytes_parsed(tmp_path, rng, monkeypatch):
    """Issue 14, bug 6: the file is read once; its hash is of what was parsed, even when the
    file changes right after (here: overwritten by another model while it is being parsed)."""
    import hashlib

    import cnnlab.interop.paddle as paddle

    src = paddle_save(lab_lenet_arrays(rng), tmp_path / "best_model.pdparams")
    original = src.read_bytes()
    real_load = paddle.safe_load

    def load_then_replace(data):
        arrays = real_load(data)
        paddle_save(lab_lenet_arrays(np.random.default_rng(99)), src)  # the file changes now
        return arrays

    monkeypatch.setattr(paddle, "safe_load", load_then_replace)
    model, payload, _ = paddle.model_from_pdparams(src, "lenet")
    assert src.read_bytes() != original
    assert payload["config"]["source"]["sha256"] == hashlib.sha256(original).hexdigest()
    expected = {k: torch.from_numpy(v) for k, v in pickle.loads(original).items()
                if k != "StructuredToParameterName@@"}
    torch.testing.assert_close(model.state_dict()["conv1.weight"], expected["conv1.weight"],
                               rtol=0, atol=0)  # the weights are the original file's too


def test_convert_paddle_reads_model_kwargs_off_the_file(tmp_path, capsys):
    torch.manual_seed(0)
    tv = torchvision.models.resnet18(num_classes=1000)  # what the lab's CIFAR notebook trained
    a = {k.replace("running_mean", "_mean").replace("running_var", "_variance"):
         (v.T if k == "fc.weight" else v).numpy() for k, v in tv.state_dict().items()
         if not k.endswith("num_batches_tracked")}
    src = paddle_save(a, tmp_path / "hapi.pdparams")
    out = tmp_path / "r.ckpt"
    assert main(["convert-paddle", str(src), "--model", "resnet18", "--out", str(out)]) == 0
    _, payload = load_model(out)
    assert payload["model"]["kwargs"] == {"in_channels": 3, "num_classes": 1000, "stem_bias": False}


def test_export_paddle_round_trip(tmp_path, capsys):
    model = make("lenet-native", 0)
    ckpt = tmp_path / "m.ckpt"
    save_checkpoint(ckpt, model_payload("lenet-native", {}, model))
    pd = tmp_path / "m.pdparams"
    assert main(["export-paddle", str(ckpt), "--out", str(pd)]) == 0
    assert "Paddle_LeNet" in capsys.readouterr().out
    out = tmp_path / "back.ckpt"
    assert main(["convert-paddle", str(pd), "--model", "lenet-native", "--out", str(out)]) == 0
    back, _ = load_model(out)
    x = torch.randn(2, 1, 32, 32)
    assert torch.equal(model(x), back.eval()(x))


def test_cli_bad_input_exits_2_with_one_line(tmp_path, lab_resnet, capsys):
    evil = tmp_path / "evil.pdparams"
    evil.write_bytes(pickle.dumps({"w": _RunsCode(os.system, "true")}, protocol=4))
    resnet = paddle_save(lab_resnet, tmp_path / "r.pdparams")
    out = str(tmp_path / "x.ckpt")
    for argv in (
        ["convert-paddle", str(tmp_path / "missing.pdparams"), "--model", "lenet", "--out", out],
        ["convert-paddle", str(evil), "--model", "lenet", "--out", out],
        ["convert-paddle", str(resnet), "--model", "lenet", "--out", out],
        ["convert-paddle", str(resnet), "--model", "resnet18", "--layout", "paddle-vision", "--out", out],
        ["export-paddle", str(resnet), "--out", str(tmp_path / "y.pdparams")],
    ):
        assert main(argv) == 2, argv
        _one_line_error(capsys)
    assert not os.path.exists(out)
    assert main(["convert-paddle", str(resnet), "--model", "vgg", "--out", out]) == 2
    assert "known models" in _one_line_error(capsys)
    with pytest.raises(SystemExit) as exc:  # argparse: unknown layout
        main(["convert-paddle", str(resnet), "--model", "lenet", "--layout", "keras", "--out", out])
    assert exc.value.code == 2
    _one_line_error(capsys)


def test_cli_layout_names_match_the_library():
    from cnnlab.cli.paddle import LAYOUT_NAMES as cli_names
    from cnnlab.interop.paddle_layouts import LAYOUT_NAMES

    assert cli_names == LAYOUT_NAMES


def test_help_does_not_import_torch():
    code = ("import sys, argparse; from cnnlab.cli import paddle; "
            "p = argparse.ArgumentParser(); paddle.register(p.add_subparsers()); "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "False", out.stderr


def test_write_failure_is_a_user_error_and_leaves_no_file(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(UserError, match="cannot write"):
        write_pdparams(make("lenet-native", 0), tmp_path / "file" / "w.pdparams")
    old = tmp_path / "w.pdparams"
    old.write_bytes(b"old")
    with pytest.raises(UserError, match="paddle-vision"):  # refused before the disk is touched
        write_pdparams(make("resnet18", 0, stem_bias=False), old, layout="lab")
    assert old.read_bytes() == b"old"


# ----------------------------------------------------------------------------------------------
# evaluate / predict / train --init read .pdparams files directly


@pytest.fixture(scope="module")
def lenet_files(tmp_path_factory):
    """A LeNet saved both ways: a cnnlab checkpoint of the model itself and its .pdparams export."""
    folder = tmp_path_factory.mktemp("lenet")
    model = make("lenet-native", 7)
    save_checkpoint(folder / "lenet.ckpt", model_payload("lenet-native", {}, model))
    write_pdparams(model, folder / "lenet.pdparams")
    return folder / "lenet.ckpt", folder / "lenet.pdparams"


def _json_lines(capsys):
    import json

    return [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]


def test_evaluate_and_predict_accept_a_pdparams_file(tmp_path, lenet_files, capsys):
    from PIL import Image

    ckpt, pd = lenet_files
    assert main(["evaluate", str(ckpt), "--json"]) == 0
    (want,) = _json_lines(capsys)
    assert main(["evaluate", str(pd), "--model", "lenet-native", "--json"]) == 0
    (got,) = _json_lines(capsys)
    assert (got["acc"], got["loss"], got["n"]) == (want["acc"], want["loss"], want["n"])

    image = tmp_path / "digit.png"
    pixels = np.zeros((28, 28), np.uint8)
    pixels[6:22, 12:16] = 255  # a bar: a "1"
    Image.fromarray(pixels).save(image)
    assert main(["predict", str(ckpt), str(image), "--json"]) == 0
    want = _json_lines(capsys)
    assert main(["predict", str(pd), str(image), "--model", "lenet", "--json"]) == 0
    got = _json_lines(capsys)
    assert got[0]["class"] == want[0]["class"]
    assert got[0]["prob"] == pytest.approx(want[0]["prob"], abs=1e-5)  # lenet: cnnlab's fast ops

    assert main(["evaluate", str(pd)]) == 2  # which model? must be said
    assert "--model" in _one_line_error(capsys)


def test_train_init_starts_from_pdparams_weights(tmp_path, lenet_files, capsys):
    ckpt, pd = lenet_files
    assert main(["evaluate", str(ckpt), "--json"]) == 0
    (want,) = _json_lines(capsys)
    out = tmp_path / "run"
    # 0 epochs: no step is taken, so the tested model is the initial one.
    assert main(["train", "lenet-native", "--init", str(pd), "--epochs", "0", "--out", str(out),
                 "--quiet"]) == 0
    run = load_json_strict(out / "run.json")
    assert run["config"]["init"] == str(pd)
    results = run["results"]
    assert results["test_acc"] == want["acc"]
    assert results["test_loss"] == pytest.approx(want["loss"], rel=1e-6)

    assert main(["train", "lenet-native", "--init", str(pd), "--resume", str(out)]) == 2
    assert "one of them" in _one_line_error(capsys)
    assert main(["train", "resnet18", "--init", str(pd), "--epochs", "0", "--out",
                 str(tmp_path / "r"), "--quiet"]) == 2
    assert "looks like the lab's LeNet" in _one_line_error(capsys)
