"""The synchronised batch norm in one process (its world-size-1 path): float64 gradcheck of the
hand-written backward, and equality with torch's BatchNorm2d (outputs, gradients, running
statistics, evaluation). Two processes with unequal shards: tests/test_ddp.py (ddp_driver.py).
Also the shard arithmetic the data-parallel trainer relies on."""

import pytest
import torch
from torch import nn

from cnnlab.train.distributed import BatchShards, shard_bounds
from cnnlab.train.sync_batchnorm import SyncBatchNorm2d, SyncBatchNormFunction, convert_sync_batchnorm


@pytest.mark.parametrize("affine", [True, False])
def test_gradcheck_float64(affine):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(3, 2, 4, 3, generator=g, dtype=torch.float64) * 3 + 1).requires_grad_()
    w = (torch.rand(2, generator=g, dtype=torch.float64) + 0.5).requires_grad_() if affine else None
    b = torch.randn(2, generator=g, dtype=torch.float64).requires_grad_() if affine else None
    inputs = (x, w, b) if affine else (x,)

    def bn(x, w=None, b=None):
        return SyncBatchNormFunction.apply(x, w, b, 1e-5, None)[0]

    assert torch.autograd.gradcheck(bn, inputs)


@pytest.mark.parametrize("momentum", [0.1, None])
def test_matches_torch_batchnorm_in_training_and_evaluation(momentum):
    g = torch.Generator().manual_seed(1)
    ref = nn.BatchNorm2d(4, momentum=momentum)
    with torch.no_grad():
        ref.weight.uniform_(0.5, 1.5, generator=g)
        ref.bias.normal_(generator=g)
    mine = convert_sync_batchnorm(nn.Sequential(nn.BatchNorm2d(4, momentum=momentum)))
    assert isinstance(mine[0], SyncBatchNorm2d)
    mine[0].load_state_dict(ref.state_dict())
    for _ in range(3):
        x = torch.randn(6, 4, 5, 5, generator=g) * 2 + 3
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        dy = torch.randn(6, 4, 5, 5, generator=g)
        ya, yb = ref(xa), mine(xb)
        (ya * dy).sum().backward()
        (yb * dy).sum().backward()
        torch.testing.assert_close(yb, ya, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xb.grad, xa.grad, rtol=1e-5, atol=1e-5)
    for name in ("weight", "bias"):
        torch.testing.assert_close(getattr(mine[0], name).grad, getattr(ref, name).grad,
                                   rtol=1e-5, atol=1e-5)
    for name in ("running_mean", "running_var"):
        torch.testing.assert_close(getattr(mine[0], name), getattr(ref, name), rtol=1e-6, atol=1e-6)
    assert int(mine[0].num_batches_tracked) == int(ref.num_batches_tracked) == 3
    ref.eval()
    mine.eval()
    x = torch.randn(2, 4, 5, 5, generator=g)
    torch.testing.assert_close(mine(x), ref(x))


def test_conversion_shares_parameters_and_keeps_the_state_dict_keys():
    from cnnlab.models import build_model

    model = build_model("resnet18", in_channels=1, num_classes=10)
    params = [id(p) for p in model.parameters()]
    keys = list(model.state_dict())
    convert_sync_batchnorm(model)
    assert [id(p) for p in model.parameters()] == params  # an optimizer built before still works
    assert list(model.state_dict()) == keys
    kinds = {type(m) for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    assert kinds == {SyncBatchNorm2d}


def test_one_value_per_channel_is_refused_like_torch():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        SyncBatchNorm2d(2)(torch.randn(1, 2, 1, 1))


@pytest.mark.parametrize("n,world", [(32, 2), (21, 2), (10, 4), (1, 2), (0, 3), (7, 7)])
def test_shards_cover_every_sample_once_as_evenly_as_they_can(n, world):
    bounds = [shard_bounds(n, rank, world) for rank in range(world)]
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(bounds, bounds[1:]))  # contiguous, no gap, no overlap
    sizes = [hi - lo for lo, hi in bounds]
    assert max(sizes) - min(sizes) <= 1 and sizes == sorted(sizes, reverse=True)


def test_evaluation_shards_take_every_batch_once():
    batches = [torch.full((3,), i) for i in range(7)]
    seen = [list(BatchShards(batches, rank, 3)) for rank in range(3)]
    assert [len(BatchShards(batches, rank, 3)) for rank in range(3)] == [3, 2, 2]
    assert sorted(int(b[0]) for part in seen for b in part) == list(range(7))


@pytest.mark.parametrize("n,batch,ok", [(149, 32, True), (129, 32, False), (1, 32, False),
                                         (64, 64, True), (3, 2, False), (4, 2, True)])
def test_every_batch_must_give_each_process_an_image(n, batch, ok):
    from cnnlab.errors import UserError
    from cnnlab.train.distributed import DistContext

    ctx = DistContext(rank=0, world_size=2, local_rank=0, backend="gloo",
                      device=torch.device("cpu"))
    if ok:
        ctx.check_batches(n, batch)
    else:
        with pytest.raises(UserError, match="2 processes need batches of 2 images at least"):
            ctx.check_batches(n, batch)
