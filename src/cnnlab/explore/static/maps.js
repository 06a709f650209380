"use strict";
// Feature maps arrive quantised: {lo, hi, q}, q = base64 of one byte per value (C, H, W order),
// value = lo + q * (hi - lo) / 255. A map of C channels is drawn as a grid of C tiles.
window.Maps = (() => {
  const NEG = [33, 102, 172];   // blue: negative
  const POS = [178, 24, 43];    // red: positive
  const GAP = [208, 212, 218];  // between tiles

  function bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let k = 0; k < bin.length; k++) out[k] = bin.charCodeAt(k);
    return out;
  }

  function decode(enc) {
    const q = bytes(enc.q);
    const step = (enc.hi - enc.lo) / 255;
    return { q, lo: enc.lo, hi: enc.hi, value: (k) => enc.lo + q[k] * step };
  }

  // white at 0, blue for negative, red for positive, full colour at |v| = m
  function diverging(v, m) {
    const t = m > 0 ? Math.max(-1, Math.min(1, v / m)) : 0;
    const c = t < 0 ? NEG : POS;
    const a = Math.abs(t);
    return [255 + (c[0] - 255) * a, 255 + (c[1] - 255) * a, 255 + (c[2] - 255) * a];
  }

  function grey(v, lo, hi) {
    const g = hi > lo ? (255 * (v - lo)) / (hi - lo) : 0;
    return [g, g, g];
  }

  function layout(C, H, W) {
    // a near-square picture: tiles per row chosen from the tile's aspect
    const cols = Math.max(1, Math.min(C, Math.ceil(Math.sqrt((C * H) / W))));
    return { cols, rows: Math.ceil(C / cols) };
  }

  // shape [C,H,W]; options: mode "diverging" | "grey", range [lo, hi] for grey, zoom (canvas
  // pixels per value), maxCss (CSS width to aim for), gap (values between tiles)
  function draw(canvas, shape, enc, opt = {}) {
    const [C, H, W] = shape;
    const zoom = opt.zoom || 1;
    const gap = opt.gap === undefined ? 1 : opt.gap;
    const { cols, rows } = layout(C, H, W);
    const dec = decode(enc);
    const width = (cols * (W + gap) - gap) * zoom;
    const height = (rows * (H + gap) - gap) * zoom;
    canvas.width = width;
    canvas.height = height;
    const ctx = canvas.getContext("2d");
    const img = ctx.createImageData(width, height);
    const px = img.data;
    for (let k = 0; k < px.length; k += 4) {
      px[k] = GAP[0]; px[k + 1] = GAP[1]; px[k + 2] = GAP[2]; px[k + 3] = 255;
    }
    const m = Math.max(Math.abs(dec.lo), Math.abs(dec.hi));
    const [glo, ghi] = opt.range || [dec.lo, dec.hi];
    for (let c = 0; c < C; c++) {
      const ox = (c % cols) * (W + gap);
      const oy = Math.floor(c / cols) * (H + gap);
      for (let y = 0; y < H; y++) {
        for (let x = 0; x < W; x++) {
          const v = dec.value((c * H + y) * W + x);
          const rgb = opt.mode === "grey" ? grey(v, glo, ghi) : diverging(v, m);
          for (let zy = 0; zy < zoom; zy++) {
            let k = (((oy + y) * zoom + zy) * width + (ox + x) * zoom) * 4;
            for (let zx = 0; zx < zoom; zx++, k += 4) {
              px[k] = rgb[0]; px[k + 1] = rgb[1]; px[k + 2] = rgb[2];
            }
          }
        }
      }
    }
    ctx.putImageData(img, 0, 0);
    const scale = Math.max(1, Math.min(16, Math.floor((opt.maxCss || 420) / width)));
    canvas.style.width = width * scale + "px";
    canvas.style.height = height * scale + "px";
    canvas._grid = { C, H, W, cols, rows, gap, zoom, scale, dec };
    return canvas._grid;
  }

  // value index (c, y, x) under a mouse event on a drawn canvas, or null (a gap, outside)
  function locate(canvas, ev) {
    const g = canvas._grid;
    if (!g) return null;
    const rect = canvas.getBoundingClientRect();
    const cx = Math.floor(((ev.clientX - rect.left) * canvas.width) / rect.width / g.zoom);
    const cy = Math.floor(((ev.clientY - rect.top) * canvas.height) / rect.height / g.zoom);
    const col = Math.floor(cx / (g.W + g.gap));
    const row = Math.floor(cy / (g.H + g.gap));
    const x = cx - col * (g.W + g.gap);
    const y = cy - row * (g.H + g.gap);
    const c = row * g.cols + col;
    if (x < 0 || y < 0 || x >= g.W || y >= g.H || col >= g.cols || c >= g.C) return null;
    return { c, y, x };
  }

  // CSS-pixel box of value (c, y, x) (size h x w values) relative to the canvas' top-left corner
  function box(canvas, c, y, x, h = 1, w = 1) {
    const g = canvas._grid;
    const unit = g.zoom * g.scale;
    const ox = (c % g.cols) * (g.W + g.gap);
    const oy = Math.floor(c / g.cols) * (g.H + g.gap);
    return { left: (ox + x) * unit, top: (oy + y) * unit, width: w * unit, height: h * unit };
  }

  return { bytes, decode, layout, draw, locate, box, diverging };
})();
