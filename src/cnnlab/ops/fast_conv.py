"""Fast 2-D convolution from tensor building blocks, with a hand-written backward.

Formula 5.13 with stride S and zero padding, in index form (x padded, NHWC layout):

    y[b,i,j,p] = sum_{u,v,d} x[b, S*i+u, S*j+v, d] * w[p,d,u,v] + bias[p]

Gathering every window into a row ("im2col") turns this into one matrix product
    Y[R, P] = cols[R, K] @ W[K, P]     R = B*M'*N' output pixels, K = U*V*D taps,
and differentiating that product gives the backward (the textbook's chain rule, written out):
    dW = cols^T @ dY                   (each tap's input times the output gradient, summed)
    dcols = dY @ W^T, dx = col2im(dcols)  (every window scatters its gradient back where it read)
    dbias = sum of dY over R.

Never calls torch's convolution kernels: only pad, as_strided views, copies, matmul and sums.
Channels-last (NHWC) is the working layout: the channels of one pixel are contiguous, so a window
row is U*V contiguous runs of D values (a cheap copy) and the products are plain row-major GEMMs.

Algorithms (`choose_algorithm`, overridable with `algo=`), all on the same geometry:
- "matmul": the kernel covers the whole (padded) input, so the output is 1x1 and im2col is just a
  reshape: one [B, K] @ [K, P] product, no copy at all (LeNet's conv5, ResNet's last stage).
- "pointwise": a 1x1 kernel: no window gather, the (subsampled) pixels are already the rows.
- "im2col": everything else; the batch is cut into chunks so the cols buffer stays in cache and
  is never stored for backward (recomputing it costs a copy; storing it costs U*V times x).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

ALGORITHMS = ("matmul", "pointwise", "im2col")

# Bytes of cols (im2col) per chunk on CPU: small enough to stay in the L2/L3 caches and below
# glibc's mmap threshold (32 MiB), so the buffer is reused instead of page-faulted in each call.
CPU_CHUNK_BYTES = 4 << 20
# On a GPU big products pay and there is no small cache to stay in: one chunk unless huge.
GPU_CHUNK_BYTES = 1 << 30


@dataclass(frozen=True)
class Geometry:
    """Where the (cropped) kernel reads: pads per side (negative = crop) and the kernel taps used.

    Taps that only ever meet zero padding are cut off (u0..u1, v0..v1): a 3x3 kernel on a 1x1
    input with padding 1 is really a 1x1 kernel, and computing it as such skips 8/9 of the work.
    """

    pads: tuple[int, int, int, int]   # top, bottom, left, right (negative values crop x)
    taps: tuple[int, int, int, int]   # u0, u1, v0, v1 (inclusive)
    stride: tuple[int, int]
    out: tuple[int, int]              # M', N'


def _alive_taps(m, u, p, s, mo):
    """Range of kernel taps along one dim that read at least one real (non-padding) row."""
    alive = [t for t in range(u) if any(0 <= s * i + t - p < m for i in range(mo))]
    if not alive:         # every window reads padding only: keep the kernel, output is the bias
        return 0, u - 1
    return alive[0], alive[-1]


def geometry(x_shape, w_shape, stride, padding) -> Geometry:
    (m, n), (u, v), (sh, sw), (ph, pw) = x_shape[-2:], w_shape[-2:], stride, padding
    mo, no = (m + 2 * ph - u) // sh + 1, (n + 2 * pw - v) // sw + 1
    u0, u1 = _alive_taps(m, u, ph, sh, mo)
    v0, v1 = _alive_taps(n, v, pw, sw, no)
    # After cropping, rows -top .. S*(M'-1)+u1-p are read; anything outside is padding or unused.
    top, left = ph - u0, pw - v0
    bottom = sh * (mo - 1) + u1 - ph - (m - 1)
    right = sw * (no - 1) + v1 - pw - (n - 1)
    return Geometry((top, bottom, left, right), (u0, u1, v0, v1), (sh, sw), (mo, no))


def choose_algorithm(x_shape, w_shape, geo: Geometry) -> str:
    """Pick the cheapest exact algorithm for this geometry (see the module docstring)."""
    top, bottom, left, right = geo.pads
    u0, u1, v0, v1 = geo.taps
    ku, kv = u1 - u0 + 1, v1 - v0 + 1
    mp, np_ = x_shape[-2] + top + bottom, x_shape[-1] + left + right
    if (ku, kv) == (mp, np_):
        return "matmul"
    if (ku, kv) == (1, 1):
        return "pointwise"
    return "im2col"


def _pad_nhwc(xh, pads):
    """Zero-pad (or crop, for negative pads) an NHWC tensor [B,M,N,D] along M and N."""
    top, bottom, left, right = pads
    if pads == (0, 0, 0, 0):
        return xh
    return F.pad(xh, (0, 0, left, right, top, bottom))


def _windows(xp, kernel, stride, out):
    """View of every window of padded NHWC xp: [B, M', N', U, V, D] (no copy)."""
    b, _, _, d = xp.shape
    sb, sm, sn, sd = xp.stride()
    return xp.as_strided((b, *out, *kernel, d),
                         (sb, sm * stride[0], sn * stride[1], sm, sn, sd))


def _chunks(batch, row_bytes, device):
    """Batch slices whose cols buffer stays under the chunk budget."""
    budget = GPU_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES
    step = max(1, min(batch, budget // max(1, row_bytes)))
    return [(b0, min(batch, b0 + step)) for b0 in range(0, batch, step)]


def _to_nhwc(t):
    """[B,C,H,W] -> NHWC view [B,H,W,C]; a copy only when t is not already channels-last."""
    th = t.permute(0, 2, 3, 1)
    return th if th.is_contiguous() else th.contiguous()


def _from_nhwc(th, like):
    """NHWC [B,H,W,C] -> [B,C,H,W] in the memory format of `like` (as torch's conv does)."""
    t = th.permute(0, 3, 1, 2)
    if like.is_contiguous(memory_format=torch.channels_last) and not like.is_contiguous():
        return t
    return t.contiguous()


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geo, algo):
        u0, u1, v0, v1 = geo.taps
        wk = weight[:, :, u0:u1 + 1, v0:v1 + 1]                     # cropped kernel [P,D,U,V]
        p, d, ku, kv = wk.shape
        wm = wk.permute(0, 2, 3, 1).reshape(p, ku * kv * d)         # [P, K], K in (u,v,d) order
        xh = _to_nhwc(x)
        b = x.shape[0]
        mo, no = geo.out
        yh = x.new_empty((b, mo, no, p))
        rows = _rows_fn(algo)
        for b0, b1 in _chunks(b, mo * no * ku * kv * d * x.element_size(), x.device):
            cols = rows(xh[b0:b1], geo, (ku, kv))                    # [R, K]
            y = yh[b0:b1].view(-1, p)
            if bias is None:
                torch.mm(cols, wm.t(), out=y)
            else:
                torch.addmm(bias, cols, wm.t(), out=y)
        ctx.save_for_backward(x, weight)
        ctx.geo, ctx.algo, ctx.has_bias = geo, algo, bias is not None
        return _from_nhwc(yh, x)

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        geo, algo = ctx.geo, ctx.algo
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        u0, u1, v0, v1 = geo.taps
        wk = weight[:, :, u0:u1 + 1, v0:v1 + 1]
        p, d, ku, kv = wk.shape
        wm = wk.permute(0, 2, 3, 1).reshape(p, ku * kv * d)
        xh = _to_nhwc(x)
        gyh = _to_nhwc(gy)
        b = x.shape[0]
        mo, no = geo.out
        gx = gxh = gw = gb = None
        if need_x:
            gxh = x.new_empty((b, *x.shape[2:], d))
        if need_w:
            gwm = x.new_zeros((p, ku * kv * d))
        rows = _rows_fn(algo)
        for b0, b1 in _chunks(b, mo * no * ku * kv * d * x.element_size(), x.device):
            g = gyh[b0:b1].reshape(-1, p)                              # dY rows [R, P]
            if need_w:
                gwm.addmm_(g.t(), rows(xh[b0:b1], geo, (ku, kv)))      # dW += dY^T @ cols
            if need_x:
                gcols = g @ wm                                          # dcols = dY @ W^T
                gxh[b0:b1] = _col2im(gcols, b1 - b0, x.shape[2:], d, geo, (ku, kv), algo)
        if need_x:
            gx = _from_nhwc(gxh, x)
        if need_w:
            gw = torch.zeros_like(weight)
            gw[:, :, u0:u1 + 1, v0:v1 + 1] = gwm.view(p, ku, kv, d).permute(0, 3, 1, 2)
        if need_b and ctx.has_bias:
            gb = gy.sum(dim=(0, 2, 3))
        return gx, gw, gb, None, None


def _rows_matmul(xh, geo, kernel):
    # The window is the whole padded image: its NHWC flattening already is the cols row.
    xp = _pad_nhwc(xh, geo.pads)
    return xp.reshape(xp.shape[0], -1)


def _rows_pointwise(xh, geo, kernel):
    # 1x1 kernel: the rows are the (strided) pixels; a copy only when the stride skips pixels.
    xp = _pad_nhwc(xh, geo.pads)
    sh, sw = geo.stride
    mo, no = geo.out
    return xp[:, :sh * (mo - 1) + 1:sh, :sw * (no - 1) + 1:sw].reshape(-1, xp.shape[-1])


def _rows_im2col(xh, geo, kernel):
    xp = _pad_nhwc(xh, geo.pads)
    return _windows(xp, kernel, geo.stride, geo.out).reshape(-1, kernel[0] * kernel[1] * xp.shape[-1])


def _rows_fn(algo):
    return {"matmul": _rows_matmul, "pointwise": _rows_pointwise, "im2col": _rows_im2col}[algo]


def _col2im(gcols, b, in_size, d, geo, kernel, algo):
    """Scatter-add window gradients back onto the input: the adjoint of `_rows_*` -> [b,M,N,D]."""
    (m, n), (top, bottom, left, right) = in_size, geo.pads
    shape = (b, m + top + bottom, n + left + right, d)
    (mo, no), (sh, sw), (ku, kv) = geo.out, geo.stride, kernel
    if algo == "matmul":              # one window = the whole padded image: a reshape
        gxp = gcols.view(shape)
    elif algo == "pointwise":         # each pixel is read at most once: one strided assignment
        gxp = gcols.new_zeros(shape)
        gxp[:, :sh * (mo - 1) + 1:sh, :sw * (no - 1) + 1:sw] = gcols.view(b, mo, no, d)
    else:
        gxp = gcols.new_zeros(shape)
        g = gcols.view(b, mo, no, ku, kv, d)
        for u in range(ku):           # U*V strided adds: each tap returns its share of dY
            for v in range(kv):
                gxp[:, u:u + sh * (mo - 1) + 1:sh, v:v + sw * (no - 1) + 1:sw] += g[:, :, :, u, v]
    return _pad_nhwc(gxp, (-top, -bottom, -left, -right))


def conv2d(x, weight, bias=None, stride=(1, 1), padding=(0, 0), algo=None):
    """x [B,D,M,N], weight [P,D,U,V], bias [P] or None -> [B,P,M',N'], M' = (M + 2P - U) // S + 1.

    Arguments are assumed valid and 4-D (`cnnlab.ops.conv2d` checks them). `algo` forces one of
    ALGORITHMS ("im2col" applies to every shape, the others only where the selector would pick
    them); None lets the selector choose.
    """
    geo = geometry(x.shape, weight.shape, stride, padding)
    best = choose_algorithm(x.shape, weight.shape, geo)
    if algo is None:
        algo = best
    elif algo not in ALGORITHMS:
        raise ValueError(f"conv2d: expected algo in {ALGORITHMS}, got {algo!r}")
    elif algo != "im2col" and algo != best:
        raise ValueError(f"conv2d: algo {algo!r} does not apply to this shape (selector: {best!r})")
    return _Conv2d.apply(x, weight, bias, geo, algo)
