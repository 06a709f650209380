"""dx of a stride-1 convolution as U*V shifted matrix products: no columns and no col2im.

The col2im route first forms dcols = W^T dY, U*V times the size of dx (25x for a 5x5 kernel),
then scatters it back. Here dY is laid out channel-major over the chunk's padded input planes,
dy_planes[P, front + n*Mp*Np], zero wherever no output lives (the columns j >= N' of each row,
the rows below the last output, and `front` floats before the first image). With stride 1, tap
(u, v) of the output at flat position s - (u*Np + v) reads input position s, so for every tap

    dx[:, s] += W_uv^T @ dy_planes[:, front + s - (u*Np + v)]     s over the chunk's planes

reads only dY of its own image or zeros, and the U*V products [D, P] @ [P, n*Mp*Np] accumulate
into one block of dx small enough to stay in cache. The price: products over the whole padded
plane, Mp*Np / (M'*N') times the useful work (1.96x for LeNet's conv3). Faster than col2im from
D = 4 input channels on; with fewer the [D, P] products are too thin for BLAS (measurements:
benchmarks/README.md).
"""

from __future__ import annotations

import torch

from ._conv_common import channels_last, chunk_size, chunks, unplace

MIN_CHANNELS = 4      # input channels D below which col2im stays faster


def _valid(block, n, p, out, np_, per_image):
    """The [n, P, M', N'] outputs inside a channel-major [P, n*per_image] block (a view)."""
    (mo, no) = out
    return block.as_strided((n, p, mo, no), (per_image, block.stride(0), np_, 1),
                            block.storage_offset())


def input_grad(x, w_crop, gy, geo):
    """dx [B,D,M,N] of a stride-1 convolution from the cropped kernel w_crop [P,D,U,V] and dY."""
    p, d, (ku, kv) = w_crop.shape[0], w_crop.shape[1], geo.kernel
    b = x.shape[0]
    mp, np_ = geo.padded(*x.shape[2:])
    plane, front = mp * np_, (ku - 1) * np_ + kv - 1
    chunk = chunk_size(b, (p + d) * plane * x.element_size(), x.device)
    # Tap (u, v) reads dy_planes from offset front - (u*Np + v) = u'*Np + v' with u' = U-1-u,
    # v' = V-1-v: with the kernel flipped, tap (u', v') of both lists below belongs together.
    # Made as two strided tensors split by unbind (a few calls, not U*V Python-level slices).
    w_taps_t = w_crop.flip(2, 3).permute(2, 3, 1, 0).contiguous().view(ku * kv, d, p).unbind(0)
    dy_buf = x.new_empty(p * (front + chunk * plane))
    gx_planes_buf = x.new_empty((d, chunk * plane))                 # dx on padded planes, CNHW
    gx = torch.empty_like(x, memory_format=torch.channels_last if channels_last(x)
                          else torch.contiguous_format)
    for b0, b1 in chunks(b, chunk):
        n = b1 - b0
        r = n * plane
        dy_planes = dy_buf[:p * (front + r)].view(p, front + r).zero_()
        _valid(dy_planes[:, front:], n, p, geo.out, np_, plane).copy_(gy[b0:b1])
        gx_planes = gx_planes_buf[:, :r]
        shifted = dy_planes.as_strided((ku, kv, p, r), (np_, 1, front + r, 1),
                                       dy_planes.storage_offset())
        taps = zip(w_taps_t, (t for row in shifted for t in row))
        for i, (w_uv_t, dy_shifted) in enumerate(taps):
            if i == 0:
                torch.mm(w_uv_t, dy_shifted, out=gx_planes)
            else:
                gx_planes.addmm_(w_uv_t, dy_shifted)                # dx[s] += W_uv^T dY[s - o]
        unplace(gx[b0:b1], gx_planes.view(d, n, mp, np_).transpose(0, 1), geo.pads)
    return gx
