"""Fast 2-D convolution from tensor building blocks, with a hand-written backward.

Formula 5.13 with stride S and zero padding, in index form (x padded, channels last):

    y[b,i,j,p] = sum_{u,v,d} x[b, S*i+u, S*j+v, d] * w[p,d,u,v] + bias[p]

Gathering every window into a row ("im2col") turns this into one matrix product
    Y[R, P] = cols[R, K] @ W[K, P]        R = B*M'*N' output pixels, K = U*V*D taps,
and differentiating that product gives the backward (the chain rule, written out):
    dW = cols^T @ dY                      each tap's input times the output gradient, summed
    dcols = dY @ W^T, dx = col2im(dcols)  every window returns its gradient where it read
    dbias = dY summed over R.
For stride 1, dx is itself a convolution: the zero-padded dY correlated with the kernel flipped
and transposed (dx[m] = sum_u dY[m - u] w[u]), so it reuses the forward's im2col and needs no
scatter at all.

Never calls torch's convolution kernels: only copies into padded buffers, as_strided window views,
matmul and sums. Algorithms (`choose_algorithm`, overridable with `algo=`):
- "matmul": the (cropped) kernel covers the whole padded input, so the output is 1x1 and the
  window is the image: one [B, K] @ [K, P] product on a view of x, no copy at all (LeNet's conv5,
  ResNet's 1x1 and 2x2 last stage).
- "pointwise": a 1x1 kernel: the (subsampled) pixels already are the rows; dx is a strided
  assignment, not U*V scatter-adds.
- "im2col": everything else.
Cropping (see `Geometry`) comes first: kernel taps that only ever meet padding are dropped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.autograd.function import once_differentiable

ALGORITHMS = ("matmul", "pointwise", "im2col")

# Bytes of im2col rows per batch chunk on CPU. The chunk's cols buffer is allocated once per call
# and reused, so it stays in cache and is never page-faulted in again; the batch is cut at image
# boundaries. Large enough that each matrix product still has thousands of rows.
CPU_CHUNK_BYTES = 8 << 20
# On a GPU there is no small cache to stay in and each extra launch costs: one chunk unless huge.
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

    @property
    def kernel(self):
        u0, u1, v0, v1 = self.taps
        return u1 - u0 + 1, v1 - v0 + 1


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
    mp, np_ = x_shape[-2] + top + bottom, x_shape[-1] + left + right
    if geo.kernel == (mp, np_):
        return "matmul"
    if geo.kernel == (1, 1):
        return "pointwise"
    return "im2col"


# ------------------------------------------------------------------------------ helpers

def _nhwc(t):
    """[B,C,H,W] -> [B,H,W,C] view (no copy)."""
    return t.permute(0, 2, 3, 1)


def _channels_last(t):
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def _place(buf, src, pads):
    """Copy NHWC src [n,H,W,C] into zero-bordered buf [n, H+top+bottom, W+left+right, C].

    Negative pads crop src instead. The border of buf is never written, so it stays zero when
    buf is reused for the next chunk.
    """
    top, bottom, left, right = pads
    h, w = src.shape[1:3]
    src = src[:, max(0, -top):h - max(0, -bottom), max(0, -left):w - max(0, -right)]
    buf[:, max(0, top):max(0, top) + src.shape[1], max(0, left):max(0, left) + src.shape[2]] = src


def _windows(xp, kernel, stride, out):
    """View of every window of padded NHWC xp: [n, M', N', U, V, C] (no copy)."""
    n, _, _, c = xp.shape
    sn, sm, sw, sc = xp.stride()
    return xp.as_strided((n, *out, *kernel, c), (sn, sm * stride[0], sw * stride[1], sm, sw, sc))


def _chunk(batch, row_bytes, device):
    """Images per chunk, so that one chunk's cols buffer stays under the budget."""
    budget = GPU_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES
    return max(1, min(batch, budget // max(1, row_bytes)))


class _Out:
    """An output [B,C,H,W] written chunk by chunk from NHWC rows, in the layout torch would use.

    A channels-last input gets a channels-last output, written in place by the matrix products;
    otherwise the rows go through a small reused buffer and are transposed into NCHW per chunk,
    while that chunk is still in cache.
    """

    def __init__(self, like, shape, chunk):
        b, c, h, w = shape
        self.last = _channels_last(like)
        self.t = like.new_empty((b, h, w, c)).permute(0, 3, 1, 2) if self.last else \
            like.new_empty(shape)
        self.buf = None if self.last else like.new_empty((chunk * h * w, c))

    def rows(self, b0, b1):
        """[n*H*W, C] matrix to write the rows of images b0..b1 into."""
        if self.last:
            return _nhwc(self.t[b0:b1]).reshape(-1, self.t.shape[1])
        return self.buf[:(b1 - b0) * self.t.shape[2] * self.t.shape[3]]

    def commit(self, b0, b1):
        if not self.last:
            n, (c, h, w) = b1 - b0, self.t.shape[1:]
            self.t[b0:b1] = self.buf[:n * h * w].view(n, h, w, c).permute(0, 3, 1, 2)


def _rows_source(t, chunk, pads):
    """Reader of NHWC row blocks of t, padded by `pads` into a reused zero-bordered buffer."""
    b, c, h, w = t.shape
    top, bottom, left, right = pads
    th = _nhwc(t)
    if pads == (0, 0, 0, 0) and _channels_last(t) or t.shape[2:] == (1, 1) and not any(pads):
        return lambda b0, b1: th[b0:b1]         # already NHWC-contiguous: a view, no copy
    buf = t.new_zeros((chunk, h + top + bottom, w + left + right, c))

    def read(b0, b1):
        part = buf[:b1 - b0]
        _place(part, th[b0:b1], pads)
        return part
    return read


# ------------------------------------------------------------------------------ the Function

class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geo, algo):
        ctx.save_for_backward(x, weight)
        ctx.geo, ctx.algo, ctx.has_bias = geo, algo, bias is not None
        wk = _cropped(weight, geo)
        if algo == "matmul":
            return _matmul_forward(x, wk, bias, geo)
        p, d, (ku, kv), (mo, no) = wk.shape[0], wk.shape[1], geo.kernel, geo.out
        wm = wk.permute(0, 2, 3, 1).reshape(p, ku * kv * d)          # [P, K], K in (u,v,d) order
        b = x.shape[0]
        chunk = _chunk(b, mo * no * ku * kv * d * x.element_size(), x.device)
        read = _rows_source(x, chunk, geo.pads)
        cols = x.new_empty((chunk * mo * no, ku * kv * d))
        y = _Out(x, (b, p, mo, no), chunk)
        for b0 in range(0, b, chunk):
            b1 = min(b, b0 + chunk)
            c = _im2col(read(b0, b1), geo, cols)
            if bias is None:
                torch.mm(c, wm.t(), out=y.rows(b0, b1))
            else:
                torch.addmm(bias, c, wm.t(), out=y.rows(b0, b1))
            y.commit(b0, b1)
        return y.t

    @staticmethod
    @once_differentiable
    def backward(ctx, gy):
        x, weight = ctx.saved_tensors
        geo, algo = ctx.geo, ctx.algo
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        gb = gy.sum(dim=(0, 2, 3)) if need_b and ctx.has_bias else None
        if algo == "matmul":
            gx, gw = _matmul_backward(x, weight, gy, geo, need_x, need_w)
        else:
            gx, gw = _im2col_backward(x, weight, gy, geo, algo, need_x, need_w)
        return gx, gw, gb, None, None


def _cropped(weight, geo):
    u0, u1, v0, v1 = geo.taps
    return weight[:, :, u0:u1 + 1, v0:v1 + 1]


def _uncropped(gwk, weight, geo):
    """Gradient of the full kernel from the cropped kernel's: zero at the dropped taps."""
    if gwk.shape == weight.shape:
        return gwk
    gw = torch.zeros_like(weight)
    u0, u1, v0, v1 = geo.taps
    gw[:, :, u0:u1 + 1, v0:v1 + 1] = gwk
    return gw


def _im2col(xp, geo, cols):
    """Copy every window of padded NHWC xp [n,..] into rows of the reused buffer -> [n*M'*N', K]."""
    n = xp.shape[0]
    (mo, no), (ku, kv) = geo.out, geo.kernel
    rows = cols[:n * mo * no]
    if geo.kernel == (1, 1) and geo.stride == (1, 1) and xp.is_contiguous():
        return xp.view(n * mo * no, -1)            # 1x1, stride 1: the pixels are the rows
    rows.view(n, mo, no, ku, kv, -1).copy_(_windows(xp, geo.kernel, geo.stride, geo.out))
    return rows


# ------------------------------------------------------------------------------ matmul

def _flat_input(x, geo):
    """x padded/cropped to exactly the one window, flattened per image: [B, D*U*V] (a view
    when no padding is needed) and the matching order of the weight's flattening."""
    top, bottom, left, right = geo.pads
    if any(geo.pads):
        m, n = x.shape[2:]
        xp = x.new_zeros((x.shape[0], x.shape[1], m + top + bottom, n + left + right))
        src = x[:, :, max(0, -top):m - max(0, -bottom), max(0, -left):n - max(0, -right)]
        xp[:, :, max(0, top):max(0, top) + src.shape[2],
           max(0, left):max(0, left) + src.shape[3]] = src
        x = xp
    return x.reshape(x.shape[0], -1), x.shape


def _matmul_forward(x, wk, bias, geo):
    # The whole (cropped) image is the only window: y[b,p] = <x[b], w[p]>, a plain matrix product.
    xf, _ = _flat_input(x, geo)
    wf = wk.reshape(wk.shape[0], -1)                                    # [P, D*U*V], a view
    y = xf @ wf.t() if bias is None else torch.addmm(bias, xf, wf.t())
    return y.view(x.shape[0], wk.shape[0], 1, 1)


def _matmul_backward(x, weight, gy, geo, need_x, need_w):
    g = gy.reshape(gy.shape[0], -1)                                     # [B, P]
    wk = _cropped(weight, geo)
    gx = gw = None
    if need_w:
        xf, _ = _flat_input(x, geo)
        gw = _uncropped((g.t() @ xf).view(wk.shape), weight, geo)
    if need_x:
        gxp = (g @ wk.reshape(wk.shape[0], -1)).view(x.shape[0], x.shape[1], *geo.kernel)
        top, bottom, left, right = geo.pads
        m, n = x.shape[2:]
        gx = gxp.new_zeros(x.shape) if any(p < 0 for p in geo.pads) else None
        part = gxp[:, :, max(0, top):gxp.shape[2] - max(0, bottom),
                   max(0, left):gxp.shape[3] - max(0, right)]
        if gx is None:
            gx = part.contiguous()
        else:
            gx[:, :, max(0, -top):m - max(0, -bottom), max(0, -left):n - max(0, -right)] = part
    return gx, gw


# ------------------------------------------------------------------------------ im2col backward

def _im2col_backward(x, weight, gy, geo, algo, need_x, need_w):
    wk = _cropped(weight, geo)
    p, d, (ku, kv), (mo, no) = wk.shape[0], wk.shape[1], geo.kernel, geo.out
    b, (m, n) = x.shape[0], x.shape[2:]
    k = ku * kv * d
    chunk = _chunk(b, mo * no * max(k, ku * kv * p) * x.element_size(), x.device)
    read_g = _rows_source(gy, chunk, (0, 0, 0, 0))                        # dY as NHWC rows
    gx = gwm = None
    if need_w:
        read_x = _rows_source(x, chunk, geo.pads)
        cols = x.new_empty((chunk * mo * no, k))
        gwm = x.new_zeros((p, k))
    if need_x:
        gx = _Out(x, x.shape, chunk)
        wm = wk.permute(0, 2, 3, 1).reshape(p, k)
        transposed = geo.stride == (1, 1) and algo == "im2col"
        if transposed:
            # Stride 1: dx = dY (zero-padded) correlated with the flipped, transposed kernel.
            top, bottom, left, right = geo.pads
            gpads = (ku - 1 - top, m + ku - 1 - mo - (ku - 1 - top),
                     kv - 1 - left, n + kv - 1 - no - (kv - 1 - left))
            read_gp = _rows_source(gy, chunk, gpads)
            wf = wk.flip(2, 3).permute(1, 2, 3, 0).reshape(d, ku * kv * p)   # [D, (u,v,p)]
            gcols = x.new_empty((chunk * m * n, ku * kv * p))
            ggeo = Geometry(gpads, (0, ku - 1, 0, kv - 1), (1, 1), (m, n))
        else:
            top, bottom, left, right = geo.pads
            gxp = x.new_empty((chunk, m + top + bottom, n + left + right, d))
            gcols = x.new_empty((chunk * mo * no, k))
    for b0 in range(0, b, chunk):
        b1 = min(b, b0 + chunk)
        g = read_g(b0, b1).reshape(-1, p)                                  # dY rows [R, P]
        if need_w:
            gwm.addmm_(g.t(), _im2col(read_x(b0, b1), geo, cols))         # dW += dY^T @ cols
        if need_x:
            rows = gx.rows(b0, b1)
            if transposed:
                torch.mm(_im2col(read_gp(b0, b1), ggeo, gcols), wf.t(), out=rows)
            elif geo.kernel == (1, 1) and geo.stride == (1, 1) and not any(geo.pads):
                torch.mm(g, wm, out=rows)                                  # 1x1: dx = dY @ W
            else:
                gc = torch.mm(g, wm, out=gcols[:g.shape[0]])              # dcols = dY @ W
                _col2im(gc, gxp[:b1 - b0], geo, rows.view(b1 - b0, m, n, d))
            gx.commit(b0, b1)
    gw = None
    if need_w:
        gw = _uncropped(gwm.view(p, ku, kv, d).permute(0, 3, 1, 2), weight, geo)
    return (gx.t if need_x else None), gw


def _col2im(gcols, gxp, geo, out):
    """Scatter-add window gradients [n*M'*N', K] onto the padded input gxp, crop into out."""
    n = gxp.shape[0]
    (mo, no), (sh, sw), (ku, kv) = geo.out, geo.stride, geo.kernel
    g = gcols.view(n, mo, no, ku, kv, -1)
    gxp.zero_()
    for u in range(ku):                  # U*V strided adds: each tap returns its share of dY
        for v in range(kv):
            gxp[:, u:u + sh * (mo - 1) + 1:sh, v:v + sw * (no - 1) + 1:sw] += g[:, :, :, u, v]
    top, bottom, left, right = geo.pads
    m, nn = out.shape[1:3]
    if min(geo.pads) < 0:            # cropped-off input rows/columns were never read: zero grad
        out.zero_()
    src = gxp[:, max(0, top):gxp.shape[1] - max(0, bottom), max(0, left):gxp.shape[2] - max(0, right)]
    out[:, max(0, -top):m - max(0, -bottom), max(0, -left):nn - max(0, -right)] = src


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
