"""Our operators vs torch's on the same seeded inputs: outputs and gradients of x, weight, bias.

`helper_test_op` (after tinygrad's) runs both on copies of one input and compares everything.
Sweeps kernel sizes (rectangular too), strides (incl. stride > kernel), paddings, odd sizes,
batch 1, non-contiguous and channels-last inputs, and forces every fast-conv algorithm.
"""

import pytest
import torch
import torch.nn.functional as F

from cnnlab import ops
from cnnlab.ops import _conv_common, _conv_shift, fast_conv

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def helper_test_op(ours, theirs, tensors, atol=1e-10, rtol=1e-7):
    """Compare ours(*tensors) with theirs(*tensors): output, then every input's gradient."""
    a = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]
    b = [t.detach().clone().requires_grad_(t.is_floating_point()) for t in tensors]
    ya, yb = ours(*a), theirs(*b)
    torch.testing.assert_close(ya, yb, atol=atol, rtol=rtol)
    g = torch.randn_like(yb)
    ga = torch.autograd.grad(ya, a, g)
    gb = torch.autograd.grad(yb, b, g)
    for name, x, y in zip(["x", "weight", "bias"], ga, gb):
        torch.testing.assert_close(x, y, atol=atol, rtol=rtol, msg=lambda m, n=name: f"d{n}: {m}")
    return ya


def conv_inputs(b, d, p, m, n, u, v, dtype=torch.float64, device="cpu", seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(b, d, m, n, dtype=dtype, generator=gen)
    w = torch.randn(p, d, u, v, dtype=dtype, generator=gen)
    bias = torch.randn(p, dtype=dtype, generator=gen)
    return x.to(device), w.to(device), bias.to(device)


# (B, D, P, M, N, U, V, stride, padding)
SWEEP = [
    (2, 3, 4, 8, 8, 3, 3, 1, 1),
    (2, 3, 4, 8, 8, 3, 3, 2, 1),
    (1, 2, 3, 9, 7, 3, 2, 1, 0),             # batch 1, odd sizes, rectangular kernel
    (2, 2, 3, 7, 9, 2, 3, (2, 3), (1, 2)),   # rectangular stride and padding
    (2, 3, 2, 9, 9, 2, 2, 3, 0),             # stride > kernel
    (2, 3, 2, 10, 10, 3, 3, 4, 2),           # stride > kernel with padding
    (2, 1, 6, 12, 12, 5, 5, 1, 0),           # LeNet conv1 (small)
    (2, 2, 3, 6, 6, 7, 7, 2, 3),             # kernel larger than the unpadded input
    (2, 4, 3, 5, 5, 1, 1, 1, 0),             # 1x1
    (2, 4, 3, 7, 7, 1, 1, 2, 1),             # 1x1, stride 2, padding
    (2, 4, 3, 5, 5, 5, 5, 1, 0),             # whole-image kernel
    (2, 4, 3, 1, 1, 3, 3, 1, 1),             # 3x3 on 1x1, padding 1
    (2, 16, 4, 17, 16, 3, 3, 1, 1),          # shift: wide map, 16 channels
    (1, 16, 3, 16, 18, 2, 3, 1, (0, 2)),     # shift: rectangular kernel, uneven padding
    (2, 4, 3, 2, 2, 3, 3, 2, 1),             # 3x3/2 on 2x2
    (2, 3, 2, 3, 3, 3, 3, 1, 3),             # padding wider than the kernel
    (1, 1, 2, 1, 1, 1, 1, 2, 1),             # every window reads padding only
    (1, 6, 16, 14, 14, 5, 5, 1, 0),          # LeNet conv3: dx by shifted products (P > 2D >= 8)
    (2, 4, 9, 7, 9, 2, 3, 1, (0, 2)),        # the same, rectangular kernel, uneven padding
    (2, 4, 9, 3, 3, 3, 3, 1, 3),             # the same, padding wider than the kernel (cropped)
]


@pytest.mark.parametrize("case", SWEEP, ids=str)
@pytest.mark.parametrize("bias", [True, False])
def test_fast_conv_matches_torch(case, bias):
    b, d, p, m, n, u, v, s, pad = case
    x, w, bb = conv_inputs(b, d, p, m, n, u, v)
    if bias:
        helper_test_op(lambda x, w, bb: ops.conv2d(x, w, bb, s, pad),
                       lambda x, w, bb: F.conv2d(x, w, bb, s, pad), [x, w, bb])
    else:
        helper_test_op(lambda x, w: ops.conv2d(x, w, None, s, pad),
                       lambda x, w: F.conv2d(x, w, None, s, pad), [x, w])


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def _algorithms(case):
    """Every algorithm that computes this case (the selector picks one of them)."""
    b, d, p, m, n, u, v, s, pad = case
    geo = fast_conv.geometry((b, d, m, n), (p, d, u, v), _pair(s), _pair(pad))
    return [a for a in fast_conv.ALGORITHMS if fast_conv.applies(a, (b, d, m, n), geo)]


ALGO_CASES = [(case, algo) for case in SWEEP for algo in _algorithms(case)]


def test_every_algorithm_is_selected_somewhere():
    picked = set()
    for b, d, p, m, n, u, v, s, pad in SWEEP + [(2, 3, 4, 12, 12, 3, 3, 1, 1),
                                                (2, 16, 4, 16, 16, 3, 3, 1, 1)]:
        geo = fast_conv.geometry((b, d, m, n), (p, d, u, v), _pair(s), _pair(pad))
        for last in (False, True):
            picked.add(fast_conv.choose_algorithm((b, d, m, n), (p, d, u, v), geo, last))
    assert picked == set(fast_conv.ALGORITHMS)


def test_selector_choices():
    def pick(x_shape, w_shape, s, pad, last=False):
        geo = fast_conv.geometry(x_shape, w_shape, (s, s), (pad, pad))
        return fast_conv.choose_algorithm(x_shape, w_shape, geo, last)
    assert pick((64, 16, 5, 5), (120, 16, 5, 5), 1, 0) == "matmul"         # LeNet conv5
    assert pick((64, 512, 1, 1), (512, 512, 3, 3), 1, 1) == "matmul"       # cropped to 1x1
    assert pick((64, 1, 32, 32), (6, 1, 5, 5), 1, 0) == "unfold"           # wide map, NCHW
    assert pick((64, 1, 32, 32), (6, 1, 5, 5), 1, 0, last=True) == "im2col"
    assert pick((64, 128, 4, 4), (128, 128, 3, 3), 1, 1) == "im2col"       # small map
    assert pick((64, 128, 4, 4), (256, 128, 1, 1), 2, 0) == "pointwise"
    assert pick((64, 32, 32, 32), (32, 32, 3, 3), 1, 1) == "shift"         # wide, 32 channels
    assert pick((64, 64, 32, 32), (64, 64, 3, 3), 1, 1) == "unfold"        # wide, 64 channels
    assert pick((64, 64, 32, 32), (128, 64, 3, 3), 2, 1) == "unfold"       # shift needs stride 1
    assert pick((64, 128, 16, 16), (128, 128, 3, 3), 1, 1) == "unfold"     # 128 channels, 16 wide
    assert pick((64, 64, 8, 8), (64, 64, 3, 3), 1, 1) == "im2col"          # small map


@pytest.mark.parametrize("channels_last", [False, True], ids=["nchw", "nhwc"])
@pytest.mark.parametrize("case,algo", ALGO_CASES, ids=str)
def test_each_algorithm_matches_torch(case, algo, channels_last):
    b, d, p, m, n, u, v, s, pad = case
    x, w, bb = conv_inputs(b, d, p, m, n, u, v, seed=1)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    y = helper_test_op(
        lambda x, w, bb: fast_conv.conv2d(x.contiguous(memory_format=fmt), w, bb, _pair(s),
                                          _pair(pad), algo=algo),
        lambda x, w, bb: F.conv2d(x, w, bb, s, pad), [x, w, bb])
    if channels_last and d > 1 and m * n > 1:     # unambiguously channels-last in and out
        assert y.is_contiguous(memory_format=torch.channels_last) or y.shape[2:] == (1, 1)


# Layouts made inside the function from a contiguous leaf (a clone would make them contiguous).
LAYOUTS = {
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "transposed": lambda t: t.transpose(2, 3).contiguous().transpose(2, 3),
    "sliced": lambda t: t[:, :, 1:, ::2],
    "expanded": lambda t: t[:1].expand(3, -1, -1, -1),
}


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_fast_conv_non_contiguous_inputs(layout):
    x, w, bb = conv_inputs(2, 3, 4, 10, 16, 3, 3)
    lay = LAYOUTS[layout]
    wlay = lay if layout in ("channels_last", "transposed") else (lambda t: t)
    assert not lay(x).is_contiguous()
    y = helper_test_op(lambda x, w, bb: ops.conv2d(lay(x), wlay(w), bb[::2], 1, 1),
                       lambda x, w, bb: F.conv2d(lay(x), wlay(w), bb[::2], 1, 1),
                       [x, w, bb.repeat_interleave(2)])
    if layout == "channels_last":   # the output keeps the input's memory format, as torch's does
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_fast_conv_float32_model_shape():
    x, w, bb = conv_inputs(4, 64, 64, 8, 8, 3, 3, dtype=torch.float32)
    helper_test_op(lambda x, w, bb: ops.conv2d(x, w, bb, 1, 1),
                   lambda x, w, bb: F.conv2d(x, w, bb, 1, 1), [x, w, bb], atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("k,s,pad", [(3, 1, 1), (3, 2, 1), (1, 2, 0), (1, 1, 0), (2, 3, 1)],
                         ids=str)
def test_fast_conv_chunked_batch(monkeypatch, k, s, pad):
    # A tiny chunk budget forces one image per chunk: chunk edges must not change the result,
    # and the reused zero-bordered buffers must not leak one image into the next.
    monkeypatch.setattr(_conv_common, "CPU_CHUNK_BYTES", 1)
    monkeypatch.setattr(_conv_shift, "BLOCK_ROWS", 1)
    x, w, bb = conv_inputs(3, 2, 3, 6, 6, k, k)
    for algo in ("unfold", "im2col") + (("shift",) if s == 1 else ()):
        helper_test_op(lambda x, w, bb: fast_conv.conv2d(x, w, bb, (s, s), (pad, pad), algo=algo),
                       lambda x, w, bb: F.conv2d(x, w, bb, s, pad), [x, w, bb])


@pytest.mark.parametrize("d,p,route", [(6, 16, "shifted"), (4, 9, "shifted"), (3, 64, "col2im"),
                                         (1, 6, "col2im"), (8, 16, "transposed")], ids=str)
def test_unfold_dx_takes_the_documented_route(monkeypatch, d, p, route):
    # unfold's dx, stride 1: shifted products when P > 2D and D >= 4 (LeNet's conv3), col2im for
    # thin D (CIFAR stem, LeNet conv1), the flipped-kernel correlation when P <= 2D. Chunked to
    # one image per chunk, so reused buffers must not leak one image into the next.
    from cnnlab.ops import _conv_dx, _conv_unfold
    calls = []

    def spy(module, name, label):
        real = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a: calls.append(label) or real(*a))
    spy(_conv_dx, "input_grad", "shifted")
    spy(_conv_unfold, "_col2im_input_grad", "col2im")
    spy(_conv_unfold, "transposed_input_grad", "transposed")
    monkeypatch.setattr(_conv_common, "CPU_CHUNK_BYTES", 1)
    x, w, bb = conv_inputs(3, d, p, 7, 6, 3, 3)
    helper_test_op(lambda x, w, bb: fast_conv.conv2d(x, w, bb, (1, 1), (1, 1), algo="unfold"),
                   lambda x, w, bb: F.conv2d(x, w, bb, 1, 1), [x, w, bb])
    assert calls == [route]          # one backward, one dx, by the documented route


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
@pytest.mark.parametrize("kernel,stride,out", [((3, 3), (1, 1), (5, 6)), ((2, 3), (2, 1), (4, 3)),
                                               ((1, 1), (2, 3), (3, 2)), ((5, 2), (3, 3), (2, 2))],
                         ids=str)
def test_col2im_matches_torch_fold(layout, kernel, stride, out):
    # The one col2im of unfold (NCHW columns) and im2col (channels-last rows) is F.fold.
    n, d, (ku, kv), (sh, sw), (mo, no) = 3, 4, kernel, stride, out
    # A last row/column the windows never read where the stride skips it (F.fold's size rule).
    mp, np_ = sh * (mo - 1) + ku + (sh > 1), sw * (no - 1) + kv + (sw > 1)
    gcols = torch.randn(n, d, ku, kv, mo, no, dtype=torch.float64)
    if layout == "channels_last":            # rows [n, (i,j), (u,v,d)] as im2col lays them out
        gcols = gcols.permute(0, 4, 5, 2, 3, 1).contiguous().permute(0, 5, 3, 4, 1, 2)
        gx_pad = torch.full((n, mp, np_, d), float("nan"), dtype=torch.float64).permute(0, 3, 1, 2)
    else:
        gx_pad = torch.full((n, d, mp, np_), float("nan"), dtype=torch.float64)
    _conv_common.col2im(gcols, gx_pad, stride)
    expected = F.fold(gcols.reshape(n, d * ku * kv, mo * no), (mp, np_), kernel, stride=stride)
    torch.testing.assert_close(gx_pad, expected, atol=1e-12, rtol=0)


def test_shifted_products_dx_without_weight_grad():
    x, w, bb = conv_inputs(2, 6, 16, 9, 8, 5, 5)        # LeNet conv3's channels: shifted dx
    x.requires_grad_()
    y = fast_conv.conv2d(x, w, bb, (1, 1), (1, 1), algo="unfold")
    (gx,) = torch.autograd.grad(y, [x], torch.ones_like(y))
    xr = x.detach().requires_grad_()
    (gr,) = torch.autograd.grad(F.conv2d(xr, w, bb, 1, 1).sum(), [xr])
    torch.testing.assert_close(gx, gr, atol=1e-10, rtol=1e-7)


def test_only_needed_gradients_are_computed():
    x, w, bb = conv_inputs(2, 3, 4, 6, 6, 3, 3)
    w.requires_grad_()
    ops.conv2d(x, w, bb, 1, 1).sum().backward()
    assert w.grad is not None and x.grad is None


@pytest.mark.parametrize("case", [(2, 2, 3, 6, 6, 3, 3, 1, 1), (1, 2, 2, 7, 6, 3, 2, 2, 1),
                                  (2, 1, 2, 5, 5, 5, 5, 1, 0)], ids=str)
def test_reference_conv_matches_torch(case):
    b, d, p, m, n, u, v, s, pad = case
    x, w, bb = conv_inputs(b, d, p, m, n, u, v)
    helper_test_op(lambda x, w, bb: ops.conv2d(x, w, bb, s, pad, impl="reference"),
                   lambda x, w, bb: F.conv2d(x, w, bb, s, pad), [x, w, bb])


def test_reference_and_fast_agree():
    x, w, bb = conv_inputs(2, 3, 4, 7, 7, 3, 2)
    helper_test_op(lambda x, w, bb: ops.conv2d(x, w, bb, (2, 1), 1, impl="reference"),
                   lambda x, w, bb: ops.conv2d(x, w, bb, (2, 1), 1, impl="fast"), [x, w, bb])
    xp = torch.randn(2, 3, 7, 9, dtype=torch.float64)
    helper_test_op(lambda t: ops.pool2d(t, 3, 2, 1, impl="reference"),
                   lambda t: ops.pool2d(t, 3, 2, 1, impl="fast"), [xp])


# (B, C, M, N, kernel, stride, padding)
POOL_SWEEP = [
    (2, 3, 8, 8, 2, None, 0),
    (2, 3, 9, 7, 3, 2, 1),             # ResNet's max-pool, odd sizes
    (1, 2, 7, 8, (2, 3), (3, 1), (1, 1)),
    (2, 2, 9, 9, 2, 3, 0),             # stride > kernel
    (2, 2, 5, 5, 5, 1, 0),             # one window
    (2, 2, 6, 6, 3, 1, 1),             # heavily overlapping windows
    (1, 2, 7, 11, (2, 3), (2, 3), 0),  # tiles (the strided-view avg path), rows/columns left over
    (2, 2, 5, 4, 1, 1, 0),             # 1x1 tiles
]


@pytest.mark.parametrize("case", POOL_SWEEP, ids=str)
@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("impl", ["fast", "reference"])
def test_pool_matches_torch(case, mode, impl):
    b, c, m, n, k, s, pad = case
    x = torch.randn(b, c, m, n, dtype=torch.float64, generator=torch.Generator().manual_seed(2))

    def theirs(t):
        if mode == "max":
            return F.max_pool2d(t, k, s, pad)
        return F.avg_pool2d(t, k, s, pad, count_include_pad=True)
    helper_test_op(lambda t: ops.pool2d(t, k, s, pad, mode=mode, impl=impl), theirs, [x])


@pytest.mark.parametrize("mode", ["max", "avg"])
@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_pool_non_contiguous_and_channels_last(mode, layout):
    x = torch.randn(2, 3, 9, 16, dtype=torch.float64)
    fn = F.max_pool2d if mode == "max" else F.avg_pool2d
    lay = LAYOUTS[layout]
    for k, st, p in [(3, 2, 1), (2, 2, 0)]:      # overlapping windows and tiles
        helper_test_op(lambda t: ops.pool2d(lay(t), k, st, p, mode=mode),
                       lambda t: fn(lay(t), k, st, p), [x])


def test_max_pool_ties_go_to_the_first_maximum_like_torch():
    # After ReLU many windows are all zeros: the gradient must go where torch sends it.
    x = torch.zeros(1, 2, 6, 6, dtype=torch.float64)
    x[0, 0, 1, 1] = 1.0
    for k, s, p in [(2, 2, 0), (3, 2, 1)]:
        helper_test_op(lambda t: ops.pool2d(t, k, s, p), lambda t: F.max_pool2d(t, k, s, p), [x])


@pytest.mark.parametrize("device", DEVICES)
def test_device_agnostic(device):
    x, w, bb = conv_inputs(2, 3, 4, 8, 8, 3, 3, dtype=torch.float32, device=device)
    helper_test_op(lambda x, w, bb: ops.conv2d(x, w, bb, 2, 1),
                   lambda x, w, bb: F.conv2d(x, w, bb, 2, 1), [x, w, bb], atol=1e-4, rtol=1e-4)
    helper_test_op(lambda t: ops.pool2d(t, 3, 2, 1), lambda t: F.max_pool2d(t, 3, 2, 1), [x],
                   atol=1e-6, rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_output_stays_on_device():
    x, w, bb = conv_inputs(2, 3, 4, 8, 8, 3, 3, dtype=torch.float32, device="cuda")
    assert ops.conv2d(x, w, bb).device.type == "cuda"
