"""Shared pieces of the fast convolution: geometry (with kernel cropping), chunked buffers, the
forward's kept im2col columns, and col2im (the adjoint of im2col, for both column layouts).

Why the constants have these values (with the measurements): benchmarks/README.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

# Bytes of im2col columns per batch chunk on CPU: big enough that few thread-pool fork/joins are
# paid, below glibc's 32 MiB mmap threshold so a freed buffer is reused, not faulted in again.
CPU_CHUNK_BYTES = 24 << 20
# Columns up to this size (the whole batch in one chunk) are kept from the forward for dW instead
# of being copied again: one copy saved per backward for at most this much memory per layer.
KEEP_COLUMNS_BYTES = 10 << 20
# On a GPU there is no small cache to stay in and each extra launch costs: one chunk unless huge.
GPU_CHUNK_BYTES = 1 << 30
NO_PADS = (0, 0, 0, 0)


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
    def kernel(self) -> tuple[int, int]:
        u0, u1, v0, v1 = self.taps
        return u1 - u0 + 1, v1 - v0 + 1

    def padded(self, m, n) -> tuple[int, int]:
        top, bottom, left, right = self.pads
        return m + top + bottom, n + left + right

    def transposed(self, m, n) -> Geometry:
        """Stride 1: the geometry of dx = dY (*) flipped kernel, a convolution of dY [.., M', N']
        padded so that every tap reads validly, with output exactly x's size M x N:
        dx[m] = sum_u dY[m + top - u] w[u]."""
        (ku, kv), (mo, no), (top, _, left, _) = self.kernel, self.out, self.pads
        pads = (ku - 1 - top, m - mo + top, kv - 1 - left, n - no + left)
        return Geometry(pads, (0, ku - 1, 0, kv - 1), (1, 1), (m, n))


def _alive_taps(m, u, p, s, mo):
    """Range of kernel taps along one dim that read at least one real (non-padding) row."""
    alive = [t for t in range(u) if any(0 <= s * i + t - p < m for i in range(mo))]
    if not alive:         # every window reads padding only: keep the kernel, output is the bias
        return 0, u - 1
    return alive[0], alive[-1]


def geometry(x_shape, w_shape, stride, padding) -> Geometry:
    return _geometry(tuple(x_shape[-2:]), tuple(w_shape[-2:]), tuple(stride), tuple(padding))


# A pure function of a few integers, called on every forward; its tap search is a Python loop
# over the output rows (~50 us for LeNet's conv1), so each geometry is worked out once.
@functools.lru_cache(maxsize=256)
def _geometry(x_hw, w_hw, stride, padding) -> Geometry:
    (m, n), (u, v), (sh, sw), (ph, pw) = x_hw, w_hw, stride, padding
    mo, no = (m + 2 * ph - u) // sh + 1, (n + 2 * pw - v) // sw + 1
    u0, u1 = _alive_taps(m, u, ph, sh, mo)
    v0, v1 = _alive_taps(n, v, pw, sw, no)
    # After cropping, rows -top .. S*(M'-1)+u1-p are read; anything outside is padding or unused.
    top, left = ph - u0, pw - v0
    bottom = sh * (mo - 1) + u1 - ph - (m - 1)
    right = sw * (no - 1) + v1 - pw - (n - 1)
    return Geometry((top, bottom, left, right), (u0, u1, v0, v1), (sh, sw), (mo, no))


def cropped(weight, geo):
    u0, u1, v0, v1 = geo.taps
    return weight[:, :, u0:u1 + 1, v0:v1 + 1]


def matrix(t, rows):
    """t as a contiguous [rows, -1] matrix. A cropped kernel reshapes to a *view* whose columns
    are U*V apart, which BLAS cannot use directly (torch would multiply much slower)."""
    return t.reshape(rows, -1).contiguous()


def uncropped(gw_crop, weight, geo):
    """Gradient of the full kernel [P,D,U,V] (contiguous, like the weight) from the cropped
    kernel's gradient gw_crop [P,D,U',V'] (any layout): zero at the dropped taps.

    Written one tap at a time so that each copy runs along D (a one-pass copy would run along
    the few taps of a kernel row); a channels-last gradient would only move that copy into
    autograd, which makes .grad match the weight's layout.
    """
    if gw_crop.shape == weight.shape and gw_crop.is_contiguous():
        return gw_crop
    cropped_off = gw_crop.shape != weight.shape
    gw = (torch.zeros_like if cropped_off else torch.empty_like)(
        weight, memory_format=torch.contiguous_format)     # a contiguous fill is one memset
    u0, u1, v0, v1 = geo.taps
    for u in range(u0, u1 + 1):
        for v in range(v0, v1 + 1):
            gw[:, :, u, v] = gw_crop[:, :, u - u0, v - v0]
    return gw


def place(buf, src, pads):
    """Copy src [n,C,H,W] (any strides) into zero-bordered buf [n,C,H+top+bottom,W+left+right].

    Negative pads crop src instead. The border of buf is never written, so it stays zero when
    buf is reused for the next chunk.
    """
    top, bottom, left, right = pads
    h, w = src.shape[2:]
    src = src[:, :, max(0, -top):h - max(0, -bottom), max(0, -left):w - max(0, -right)]
    buf[:, :, max(0, top):max(0, top) + src.shape[2],
        max(0, left):max(0, left) + src.shape[3]] = src


def unplace(out, src, pads):
    """The adjoint of `place`: the gradient of src from the gradient of the padded buffer."""
    top, bottom, left, right = pads
    h, w = out.shape[2:]
    if min(pads) < 0:                # cropped-off rows/columns were never read: zero gradient
        out.zero_()
    out[:, :, max(0, -top):h - max(0, -bottom), max(0, -left):w - max(0, -right)] = \
        src[:, :, max(0, top):src.shape[2] - max(0, bottom),
            max(0, left):src.shape[3] - max(0, right)]


def chunk_size(batch, bytes_per_image, device):
    """Images per chunk, so that one chunk's column buffer stays under the budget."""
    budget = GPU_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES
    return max(1, min(batch, budget // max(1, bytes_per_image)))


def chunks(batch, chunk):
    """(b0, b1) of each chunk of images b0..b1-1."""
    return ((b0, min(batch, b0 + chunk)) for b0 in range(0, batch, chunk))


def columns_chunk(x, geo):
    """Images per chunk of im2col columns (D*U'*V'*M'*N' values per image): the forward and dW
    both chunk by this, so they read the same columns chunk by chunk."""
    (ku, kv), (mo, no) = geo.kernel, geo.out
    per_image = x.shape[1] * ku * kv * mo * no * x.element_size()
    return chunk_size(x.shape[0], per_image, x.device)


def channels_last(t):
    """True when t is laid out channels-last (and not also plain contiguous)."""
    return t.is_contiguous(memory_format=torch.channels_last) and not t.is_contiguous()


def padded_reader(t, chunk, pads, nhwc=False):
    """Reader of batch chunks t[b0:b1] zero-padded by `pads` ([n,C,H+top+bottom,W+left+right]).

    Without padding the chunk is a view of t (when nhwc, only if t is already channels-last).
    With padding it is copied into one reused buffer, channels-last when `nhwc`, so the im2col
    that follows reads contiguous channel runs.
    """
    b, c, h, w = t.shape
    if not any(pads) and (not nhwc or t.permute(0, 2, 3, 1).is_contiguous()):
        return lambda b0, b1: t[b0:b1]                    # no copy
    top, bottom, left, right = pads
    hp, wp = h + top + bottom, w + left + right
    if nhwc:
        buf = t.new_zeros((chunk, hp, wp, c)).permute(0, 3, 1, 2)
    else:
        buf = t.new_zeros((chunk, c, hp, wp))

    def read(b0, b1):
        part = buf[:b1 - b0]
        place(part, t[b0:b1], pads)
        return part
    return read


def column_reader(x, geo, chunk, columns_of, kept_columns=None, nhwc=False):
    """Reader of the im2col columns of images b0..b1, batch-first [b1-b0, ...].

    With `kept_columns` (the forward's columns of the whole batch, see `keep_columns`) a slice of
    them, so the reader's chunks need not be the forward's; else columns_of(padded chunk [n,D,
    Mp,Np] (channels-last when nhwc), geo, buffer) copies them into one buffer reused per chunk.
    """
    if kept_columns is not None:
        return lambda b0, b1: kept_columns[b0:b1]
    read = padded_reader(x, chunk, geo.pads, nhwc)
    (ku, kv), (mo, no) = geo.kernel, geo.out
    buf = x.new_empty(chunk * x.shape[1] * ku * kv * mo * no)
    return lambda b0, b1: columns_of(read(b0, b1), geo, buf)


def keep_columns(columns, batch):
    """The forward's last columns [n, ...] if they are the whole batch's (one chunk) and small
    enough to keep for dW (KEEP_COLUMNS_BYTES), else None: dW then copies them again, which is
    cheaper than keeping U*V times the input alive."""
    if columns.shape[0] == batch and columns.numel() * columns.element_size() <= KEEP_COLUMNS_BYTES:
        return columns
    return None


def dx_is_transposed_conv(p, d, geo):
    """Stride 1 with P <= 2D (or a 1x1 kernel): dx as a stride-1 convolution of dY with the
    flipped kernel (`transposed_input_grad`) is no bigger a product than dcols = W^T dY and needs
    no scatter."""
    return geo.stride == (1, 1) and (p <= 2 * d or geo.kernel == (1, 1))


def transposed_input_grad(forward, gy, w_crop, geo, x_hw):
    """dx [B,D,M,N] of a stride-1 convolution, computed by an algorithm's own `forward` as
    dY (*) W' with W'[d, p, u, v] = w_crop[p, d, U-1-u, V-1-v] on the transposed geometry."""
    flipped = w_crop.flip(2, 3).transpose(0, 1)                       # [D, P, U', V']
    return forward(gy, flipped, None, geo.transposed(*x_hw))[0]


@functools.lru_cache(maxsize=128)
def window_pixels(kernel, stride, out, width, device):
    """Flat index (row * width + column) of the pixel that tap (u, v) of window (i, j) reads in a
    plane `width` wide: [U, V, M', N'] (built once per geometry; callers only read it)."""
    (ku, kv), (sh, sw), (mo, no) = kernel, stride, out
    rows = (torch.arange(ku, device=device).view(ku, 1, 1, 1)
            + sh * torch.arange(mo, device=device).view(1, 1, mo, 1))
    cols = (torch.arange(kv, device=device).view(1, kv, 1, 1)
            + sw * torch.arange(no, device=device).view(1, 1, 1, no))
    return rows * width + cols


def col2im(gcols, gx_pad, stride):
    """The adjoint of im2col: gx_pad[b, d, S*i+u, S*j+v] = sum over taps of gcols[b,d,u,v,i,j].

    gcols [n,D,U,V,M',N'] and gx_pad [n,D,Mp,Np] are views of NCHW memory (unfold's columns,
    (d,u,v) x (i,j)) or of channels-last memory (im2col's rows, (i,j) x (u,v,d)); gx_pad is
    overwritten. A 1x1 kernel has one tap: a strided assignment. Otherwise one index_add_ over
    the flattened planes, each tap of each output adding into the pixel it read (in both layouts
    faster than U*V strided adds, see benchmarks/README.md).
    """
    n, d, ku, kv, mo, no = gcols.shape
    (sh, sw), (mp, np_) = stride, gx_pad.shape[2:]
    gx_pad.zero_()
    if (ku, kv) == (1, 1):
        gx_pad[:, :, :sh * (mo - 1) + 1:sh, :sw * (no - 1) + 1:sw] = gcols[:, :, 0, 0]
        return
    pixels = window_pixels((ku, kv), tuple(stride), (mo, no), np_, gcols.device)
    if channels_last(gx_pad):       # memory [n, Mp*Np, D]: add runs of D channels per index
        gcols = gcols.permute(0, 4, 5, 2, 3, 1).reshape(n, mo * no * ku * kv, d)
        gx_pad.permute(0, 2, 3, 1).view(n, mp * np_, d).index_add_(
            1, pixels.permute(2, 3, 0, 1).reshape(-1), gcols)
    else:                           # memory [n*D, Mp*Np]: add runs of n*D planes per index
        gx_pad.view(n * d, mp * np_).index_add_(1, pixels.view(-1), gcols.reshape(n * d, -1))
