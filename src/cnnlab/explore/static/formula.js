"use strict";
// Formula 5.13 written out for one clicked pixel of a convolution's output: the result first
// (sum, bias, value, the map's value, ops.conv2d(impl="reference"), their agreement), then the
// receptive field outlined on the layer's input, then every input channel's window, kernel and
// elementwise products.
window.Formula = (() => {
  // box: the #formula element; f: the /api/formula answer (+ layer, approx, step from the page);
  // h: the page's helpers {t, fmt, node} and grey (draw the input in grey: it is the image)
  function render(box, f, h) {
    const { t, fmt, node } = h;
    const grid = (rows, pad, cls) => {   // a U x V table of numbers; padded cells marked
      const tab = node("table", "nums " + cls);
      rows.forEach((row, u) => {
        const tr = node("tr");
        row.forEach((v, w) => tr.append(node("td", pad && pad[u][w] ? "pad" : "", fmt(v, 3))));
        tab.append(tr);
      });
      return tab;
    };
    box.replaceChildren();
    Object.assign(box.dataset, {
      ready: "1", layer: f.layer, p: f.p, i: f.i, j: f.j, sum: f.sum,
      bias: f.bias === null ? 0 : f.bias, value: f.value, reference: f.reference,
      map: f.map_value, approx: f.approx, step: f.step, agree: f.agree,
    });
    const [stride, padding] = [f.stride[0], f.padding[0]];
    box.append(node("h3", "fhead", `${f.layer}: z^${f.p}[${f.i}, ${f.j}]`));
    box.append(node("p", "eq",
      `z^p[i,j] = Σ_d Σ_u Σ_v W^{p,d}[u,v] · X^d[${stride}·i+u−${padding}, ${stride}·j+v−${padding}] + b^p` +
      `   (D = ${f.input_shape[0]}, U×V = ${f.kernel_size.join("×")}, S = ${stride}, P = ${padding})`));

    const tot = node("dl", "totals");
    const line = (label, value, cls) => tot.append(node("dt", "", label), node("dd", cls, value));
    const shown = f.approx === null ? ""
      : `  (${fmt(f.approx, 3)} ± ${fmt(f.step / 2, 2)} ${t("on-screen")})`;
    line(t("sum"), fmt(f.sum, 7), "f-sum");
    line(t("bias"), f.bias === null ? t("no-bias") : "+ " + fmt(f.bias, 7), "f-bias");
    line(t("value"), "= " + fmt(f.value, 7), "f-value");
    line(t("map-value"), fmt(f.map_value, 7) + shown, "f-map");
    line(t("reference"), fmt(f.reference, 7), "f-ref");
    line(f.agree ? "✓ " + t("agree") : "✗ " + t("disagree"), `${t("max-diff")} = ${fmt(f.max_abs_diff, 2)}`,
         f.agree ? "f-agree ok" : "f-agree bad");
    box.append(tot);   // the result first, then where it comes from

    // receptive field on the layer's input
    box.append(node("div", "fsub", t("receptive")));
    const wrap = node("div", "mapwrap");
    const c = node("canvas", "map");
    const [D, H, W] = f.input_shape;
    const { cols } = Maps.layout(D, H, W);
    const zoom = Math.max(1, Math.min(8, Math.floor(360 / (cols * (W + 1)))));
    const g = Maps.draw(c, f.input_shape, f.input_map,
                        { zoom, maxCss: 380, mode: h.grey ? "grey" : "diverging" });
    const cx = c.getContext("2d");
    cx.strokeStyle = "#f59e0b";
    cx.lineWidth = Math.max(1, Math.floor(zoom / 2));
    const [r0, c0] = f.origin, [U, V] = f.kernel_size;
    for (let d = 0; d < D; d++) {
      const ox = (d % g.cols) * (W + 1), oy = Math.floor(d / g.cols) * (H + 1);
      const x0 = Math.max(c0, 0), y0 = Math.max(r0, 0);
      const x1 = Math.min(c0 + V, W), y1 = Math.min(r0 + U, H);
      if (x1 <= x0 || y1 <= y0) continue;
      cx.strokeRect((ox + x0) * zoom + 0.5, (oy + y0) * zoom + 0.5,
                    (x1 - x0) * zoom - 1, (y1 - y0) * zoom - 1);
    }
    wrap.append(c);
    box.append(wrap);

    // every input channel: window, kernel, products, partial sum
    const list = node("div", "channels");
    for (const ch of f.channels) {
      const row = node("div", "channel");
      row.append(node("div", "chead", `d = ${ch.d}: ${t("channel-sum")} = ${fmt(ch.sum)}`));
      const tabs = node("div", "tabs");
      const cell = (title, tab) => {
        const w = node("div", "tabwrap");
        w.append(node("div", "tt", title), tab);
        return w;
      };
      tabs.append(cell(t("window"), grid(ch.window, f.pad, "win")),
                  cell("⊙ " + t("kernel"), grid(ch.kernel, null, "ker")),
                  cell("= " + t("products"), grid(ch.products, null, "prod")));
      row.append(tabs);
      list.append(row);
    }
    box.append(list);

  }

  return { render };
})();
