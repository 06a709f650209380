"""Shared pieces of the fast convolution: geometry (with kernel cropping) and buffer helpers."""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

# Bytes of im2col columns per batch chunk on CPU. The chunk's buffers are allocated once per call
# and reused across chunks; the batch is cut at image boundaries. Bigger chunks mean fewer, larger
# operations (each one a fork/join of the thread pool, costly when other processes share the
# cores: 32 MiB beat 8 MiB by 1.3-1.7x on the 32x32 and 16x16 ResNet shapes measured so); below
# glibc's 32 MiB mmap limit so freed buffers are reused, not page-faulted in again each call.
# Peak memory stays below native's + one chunk (measured: 1.0-1.6x native on the largest shapes).
CPU_CHUNK_BYTES = 24 << 20
# Columns up to this size (the whole batch in one chunk) are kept from the forward for dW
# instead of being copied again: one copy of the columns saved per backward (LeNet's conv1 and
# conv3, ResNet's 8x8 and smaller maps at batch 64) for at most this much memory per layer.
KEEP_COLUMNS_BYTES = 10 << 20
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
    def kernel(self) -> tuple[int, int]:
        u0, u1, v0, v1 = self.taps
        return u1 - u0 + 1, v1 - v0 + 1

    def padded(self, m, n) -> tuple[int, int]:
        top, bottom, left, right = self.pads
        return m + top + bottom, n + left + right

    def transposed_pads(self, m, n) -> tuple[int, int, int, int]:
        """Stride 1: pads of dY so that dx = dY (*) flipped kernel has exactly x's size M x N."""
        (ku, kv), (mo, no), (top, _, left, _) = self.kernel, self.out, self.pads
        return (ku - 1 - top, m - mo + top, kv - 1 - left, n - no + left)


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
    are U*V apart, which BLAS cannot use directly (torch then multiplies ~10x slower)."""
    return t.reshape(rows, -1).contiguous()


def uncropped(gwk, weight, geo):
    """Gradient of the full kernel [P,D,U,V] (contiguous, like the weight) from the cropped
    kernel's gradient gwk [P,D,U',V'] (any layout): zero at the dropped taps.

    Written one tap at a time: each copy then runs along D. A one-pass copy or pad into a
    contiguous [P,D,3,3] would run along the 3 taps of a kernel row and take ~10x longer
    (10 ms for ResNet's 512x256x3x3), and handing back a channels-last gradient only moves that
    copy into autograd (it makes .grad match the weight's layout).
    """
    if gwk.shape == weight.shape and gwk.is_contiguous():
        return gwk
    cropped_off = gwk.shape != weight.shape
    gw = (torch.zeros_like if cropped_off else torch.empty_like)(
        weight, memory_format=torch.contiguous_format)     # a contiguous fill is one memset
    u0, u1, v0, v1 = geo.taps
    for u in range(u0, u1 + 1):
        for v in range(v0, v1 + 1):
            gw[:, :, u, v] = gwk[:, :, u - u0, v - v0]
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
