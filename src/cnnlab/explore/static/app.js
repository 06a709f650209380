"use strict";
// cnnlab explore: the page. Talks only to its own server (see server.py for the API).
(() => {
  const $ = (s) => document.querySelector(s);
  const S = {
    lang: "en", models: [], sel: null,
    file: null,          // an uploaded or sampled image (Blob); null: the drawing canvas
    sample: null,        // {index, label} of a sampled test image
    version: 0, clearedAt: 0, sent: {}, inflight: {},
    results: {}, blobs: {}, timing: {},   // per model: last JSON, the image it was made from
    formula: null, marker: null,
  };

  const timings = (window.cnnlabTimings = []);
  const t = (k) => (I18N[S.lang] && I18N[S.lang][k]) || I18N.en[k] || k;

  function fmt(v, digits = 4) {
    if (v === null || v === undefined) return "–";
    if (v === 0) return "0";
    const a = Math.abs(v);
    if (a >= 1e4 || a < 1e-3) return v.toExponential(2);
    return String(Number(v.toPrecision(digits)));
  }

  function node(tag, cls, text) {
    const n = document.createElement(tag);
    if (cls) n.className = cls;
    if (text !== undefined) n.textContent = text;
    return n;
  }

  function showError(msg) {
    const e = $("#error");
    e.textContent = msg || "";
    e.hidden = !msg;
  }

  function setBusy() {
    const n = Object.values(S.inflight).filter(Boolean).length;
    document.body.dataset.busy = String(n);
    const parts = S.models.filter((m) => S.timing[m.name]).map((m) => {
      const tm = S.timing[m.name];
      return `${m.name}: ${t("server-ms")} ${tm.server} ms, ${tm.total} ms`;
    });
    $("#status").textContent = n ? t("busy") : parts.join(" · ");
  }

  // ------------------------------------------------------------------ drawing
  const canvas = $("#draw");
  const ctx = canvas.getContext("2d");
  let last = null;

  function clearCanvas() {
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }

  function point(ev) {
    const r = canvas.getBoundingClientRect();
    return [((ev.clientX - r.left) * canvas.width) / r.width,
            ((ev.clientY - r.top) * canvas.height) / r.height];
  }

  function stroke(a, b) {
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 20;       // about 2 pixels of a 28x28 digit, as MNIST's pen
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.beginPath();
    ctx.moveTo(a[0], a[1]);
    ctx.lineTo(b[0], b[1]);
    ctx.stroke();
  }

  canvas.addEventListener("pointerdown", (ev) => {
    ev.preventDefault();
    canvas.setPointerCapture(ev.pointerId);
    S.file = null;
    S.sample = null;
    renderSampleLabel();
    last = point(ev);
    stroke(last, last);
    changed();
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!last) return;
    const p = point(ev);
    stroke(last, p);
    last = p;
    changed();
  });
  for (const name of ["pointerup", "pointercancel"]) {
    canvas.addEventListener(name, () => {
      if (last) changed();
      last = null;
    });
  }

  function preview(blob) {
    createImageBitmap(blob).then((bmp) => {
      clearCanvas();
      const k = Math.min(canvas.width / bmp.width, canvas.height / bmp.height);
      const w = bmp.width * k, h = bmp.height * k;
      ctx.drawImage(bmp, (canvas.width - w) / 2, (canvas.height - h) / 2, w, h);
    }).catch(() => clearCanvas());   // not decodable here: the server says why
  }

  // The drawing as PNG bytes. toDataURL, not toBlob: Chromium runs toBlob's encoder as an idle
  // task, which waits up to a second while the page is busy drawing feature maps.
  function currentBlob() {
    if (S.file) return Promise.resolve(S.file);
    const png = Maps.bytes(canvas.toDataURL("image/png").split(",")[1]);
    return Promise.resolve(new Blob([png], { type: "image/png" }));
  }

  // ------------------------------------------------------------------ requests
  // Each model has at most one request in flight; a change meanwhile sends the newest image
  // when it returns (throttling by the server's own speed).
  function changed() {
    S.version++;
    for (const m of S.models) if (!S.inflight[m.name]) predict(m.name);
  }

  async function predict(key) {
    S.inflight[key] = true;
    setBusy();
    const v = S.version;
    S.sent[key] = v;
    const t0 = performance.now();
    try {
      const blob = await currentBlob();
      // the bytes, not the Blob: then the browser tests can read what the page sent
      const body = await blob.arrayBuffer();
      const url = `/api/predict?model=${encodeURIComponent(key)}`;
      const r = await fetch(url, { method: "POST", body });
      const j = await r.json();
      if (!r.ok) throw new Error(j.error || r.statusText);
      if (v > S.clearedAt) {
        S.results[key] = j;
        S.blobs[key] = blob;
        showError("");
        renderModel(key);
        S.timing[key] = { server: j.ms, total: Math.round(performance.now() - t0) };
        // image -> maps on screen, kept for benchmarks/explore.py --browser (the last 1,000)
        timings.push({ model: key, server: j.ms, total: performance.now() - t0 });
        if (timings.length > 1000) timings.shift();
      }
    } catch (e) {
      showError(String(e.message || e));
    } finally {
      S.inflight[key] = false;
      setBusy();
      if (S.sent[key] < S.version && S.version > S.clearedAt) predict(key);
    }
  }

  async function requestFormula(layer, p, i, j) {
    const key = S.sel, blob = S.blobs[key];
    if (!blob) return;
    const box = $("#formula");
    box.dataset.ready = "0";
    const q = new URLSearchParams({ model: key, layer, p, i, j });
    try {
      const body = await blob.arrayBuffer();
      const r = await fetch(`/api/formula?${q}`, { method: "POST", body });
      const f = await r.json();
      if (!r.ok) throw new Error(f.error || r.statusText);
      const map = document.querySelector(`#layers canvas[data-layer="${CSS.escape(layer)}"]`);
      const g = map && map._grid;
      f.approx = g ? g.dec.value((p * g.H + i) * g.W + j) : null;   // the pixel as shown
      f.step = g ? (g.dec.hi - g.dec.lo) / 255 : null;
      f.layer = layer;
      S.formula = f;
      renderFormula();
    } catch (e) {
      showError(String(e.message || e));
    }
  }

  // ------------------------------------------------------------------ rendering
  function renderAll() {
    renderCompare();
    renderResult();
    renderInputs();
    renderKernels();
    renderLayers(true);
    renderFormula();
    renderSampleLabel();
    setBusy();
  }

  function renderModel(key) {
    renderCompare();
    if (key !== S.sel) return;
    renderResult();
    renderInputs();
    renderLayers(false);
  }

  function renderSampleLabel() {
    $("#sample-label").textContent = S.sample ? `${t("true-label")}: ${S.sample.label}` : "";
  }

  function renderCompare() {
    const box = $("#compare");
    box.replaceChildren();
    for (const m of S.models) {
      const res = S.results[m.name];
      const card = node("button", "model-card" + (m.name === S.sel ? " selected" : ""));
      card.type = "button";
      card.dataset.model = m.name;
      card.append(node("span", "mname", m.name),
                  node("span", "arch", `${m.model} · ${m.params.toLocaleString()} ${t("params")}`));
      const pred = node("span", "mpred", res ? String(res.pred) : "–");
      if (res) pred.title = `p = ${fmt(res.probs[res.pred], 3)}`;
      card.append(pred);
      const bars = node("span", "minibars");
      for (let k = 0; k < 10; k++) {
        const b = node("span", "minibar" + (res && k === res.pred ? " top" : ""));
        b.style.height = `${res ? Math.max(2, res.probs[k] * 100) : 2}%`;
        b.title = res ? `${k}: ${fmt(res.probs[k], 3)}` : String(k);
        bars.append(b);
      }
      card.append(bars);
      card.addEventListener("click", () => select(m.name));
      box.append(card);
    }
  }

  function select(key) {
    if (key === S.sel) return;
    S.sel = key;
    S.formula = null;
    S.marker = null;
    renderAll();
  }

  function renderResult() {
    const res = S.results[S.sel];
    const pred = $("#prediction"), probs = $("#probs");
    pred.replaceChildren();
    probs.replaceChildren();
    if (!res) {
      delete pred.dataset.pred;
      return;
    }
    pred.dataset.pred = res.pred;
    pred.dataset.model = res.model;
    const text = `${res.model} ${t("predicts")} ${res.pred} (p = ${fmt(res.probs[res.pred], 3)})`;
    pred.append(node("span", "digit", String(res.pred)), node("span", "ptext", text));
    probs.append(node("div", "probs-title", t("probs")));
    res.probs.forEach((p, k) => {
      const row = node("div", "prob-row" + (k === res.pred ? " top" : ""));
      const track = node("span", "track");
      const fill = node("span", "fill");
      fill.style.width = `${(p * 100).toFixed(1)}%`;
      track.append(fill);
      row.append(node("span", "cls", String(k)), track,
                 node("span", "pct", `${(p * 100).toFixed(1)}%`));
      probs.append(row);
    });
  }

  function renderInputs() {
    const res = S.results[S.sel];
    const info = S.models.find((m) => m.name === S.sel);
    const mnist = info && info.input_kind === "mnist";
    $("#input-note").textContent = info ? (mnist ? t("input-mnist") : info.input) : "";
    if (!res) {
      for (const c of [$("#model-input"), $("#edges")]) {
        c.width = c.height = 0;
        c.style.width = c.style.height = "0";
      }
      return;
    }
    const x = res.input;   // [1,C,32,32]; the lab's normalisation maps 0..255 to -1..1
    Maps.draw($("#model-input"), x.shape.slice(1), x,
              { mode: "grey", range: mnist ? [-1, 1] : undefined, maxCss: 224 });
    Maps.draw($("#edges"), res.edges.shape, res.edges, { maxCss: 224 });
  }

  function renderKernels() {
    const info = S.models.find((m) => m.name === S.sel);
    const c = $("#kernels");
    const k = info && info.kernels;
    if (!k) return;
    const [P, D, U, V] = k.shape;
    Maps.draw(c, [P * D, U, V], k, { maxCss: 360 });
    $("#kernels-note").textContent = `${k.layer} [${k.shape.join(", ")}]: ${t("kernels-note")}`;
  }

  function renderLayers(rebuild) {
    const box = $("#layers");
    const res = S.results[S.sel];
    if (!res) { box.replaceChildren(); return; }
    const names = res.layers.map((l) => l.name).join("|");
    if (rebuild || box.dataset.names !== names || box.dataset.model !== S.sel) {
      box.replaceChildren();
      box.dataset.names = names;
      box.dataset.model = S.sel;
      for (const l of res.layers) box.append(layerCard(l));
    }
    const size = res.layers.length > 16 ? 180 : 260;   // ResNet18 shows about 60 layers
    for (const l of res.layers) {
      const c = box.querySelector(`canvas[data-layer="${CSS.escape(l.name)}"]`);
      if (!c) continue;
      if (l.q !== undefined) {
        Maps.draw(c, l.shape.slice(1), l, { maxCss: size });
      } else if (l.values) {
        drawValues(c, l.values);
        const txt = box.querySelector(`[data-values="${CSS.escape(l.name)}"]`);
        const few = l.values.length <= 10;   // the logits: written out too
        if (txt) txt.textContent = few ? l.values.map((v, k) => `${k}: ${fmt(v, 3)}`).join("  ") : "";
      }
    }
    placeMarker();
  }

  function drawValues(c, values) {
    const m = Math.max(...values.map(Math.abs));
    const q = values.map((v) => Math.round(((v + m) / (2 * m || 1)) * 255));
    const enc = { lo: -m, hi: m, q: btoa(String.fromCharCode(...q)) };
    // a few values (logits) in a row, many (84, 512) as a near-square grid of 1x1 tiles
    const shape = values.length <= 16 ? [1, 1, values.length] : [values.length, 1, 1];
    Maps.draw(c, shape, enc, { maxCss: values.length <= 16 ? 12 * values.length : 160 });
  }

  function layerCard(l) {
    const card = node("div", "layer");
    card.dataset.layer = l.name;
    card.dataset.kind = l.kind;
    const head = node("div", "lhead");
    head.append(node("span", "lname", l.name), node("span", "kind", t(`kind-${l.kind}`)),
                node("span", "shape", `[${l.shape.join(", ")}]`));
    card.append(head);
    const wrap = node("div", "mapwrap");
    const c = node("canvas", "map" + (l.clickable ? " clickable" : ""));
    c.dataset.layer = l.name;
    c.addEventListener("mousemove", (ev) => {   // the value under the pointer, as a tooltip
      const hit = Maps.locate(c, ev);
      const g = c._grid;
      const v = hit ? g.dec.value((hit.c * g.H + hit.y) * g.W + hit.x) : 0;
      c.title = hit ? `[${hit.c}, ${hit.y}, ${hit.x}] ≈ ${fmt(v, 3)}` : "";
    });
    if (l.clickable) {
      c.addEventListener("click", (ev) => {
        const hit = Maps.locate(c, ev);
        if (!hit) return;
        S.marker = { layer: l.name, ...hit };
        placeMarker();
        requestFormula(l.name, hit.c, hit.y, hit.x);
      });
    }
    wrap.append(c);
    card.append(wrap);
    if (l.values) {
      const txt = node("div", "values");
      txt.dataset.values = l.name;
      card.append(txt);
    }
    return card;
  }

  function placeMarker() {
    document.querySelectorAll("#layers .marker").forEach((n) => n.remove());
    const mk = S.marker;
    if (!mk) return;
    const c = document.querySelector(`#layers canvas[data-layer="${CSS.escape(mk.layer)}"]`);
    if (!c || !c._grid) return;
    const b = Maps.box(c, mk.c, mk.y, mk.x);
    const m = node("span", "marker");
    Object.assign(m.style, { left: `${b.left - 2}px`, top: `${b.top - 2}px`,
                             width: `${b.width}px`, height: `${b.height}px` });
    c.parentElement.append(m);
  }

  function renderFormula() {
    const box = $("#formula");
    if (!S.formula) {
      box.replaceChildren(node("p", "note", t("formula-empty")));
      box.dataset.ready = "0";
      return;
    }
    const info = S.models.find((m) => m.name === S.sel);
    const grey = Boolean(info && info.convs[0] === S.formula.layer);   // input = the model's input
    Formula.render(box, S.formula, { t, fmt, node, grey });
  }

  // ------------------------------------------------------------------ buttons
  $("#clear").addEventListener("click", () => {
    clearCanvas();
    S.file = null;
    S.sample = null;
    S.version++;
    S.clearedAt = S.version;
    S.results = {};
    S.blobs = {};
    S.formula = null;
    S.marker = null;
    renderAll();
  });

  $("#sample").addEventListener("click", async () => {
    try {
      const r = await fetch("/api/sample");
      const j = await r.json();
      if (!r.ok) throw new Error(j.error || r.statusText);
      S.file = new Blob([Maps.bytes(j.png)], { type: "image/png" });
      S.sample = { index: j.index, label: j.label };
      renderSampleLabel();
      preview(S.file);
      changed();
    } catch (e) {
      showError(String(e.message || e));
    }
  });

  $("#upload").addEventListener("change", (ev) => {
    const file = ev.target.files && ev.target.files[0];
    if (!file) return;
    S.file = file;
    S.sample = null;
    renderSampleLabel();
    preview(file);
    changed();
    ev.target.value = "";   // choosing the same file again is a change too
  });

  $("#lang").addEventListener("click", () => {
    S.lang = S.lang === "en" ? "zh" : "en";
    applyLang();
  });

  function applyLang() {
    document.documentElement.lang = S.lang === "zh" ? "zh-CN" : "en";
    document.querySelectorAll("[data-i18n]").forEach((n) => { n.textContent = t(n.dataset.i18n); });
    $("#lang").textContent = S.lang === "en" ? "中文" : "EN";
    renderAll();
  }

  async function init() {
    clearCanvas();
    try {
      const r = await fetch("/api/models");
      const j = await r.json();
      if (!r.ok) throw new Error(j.error || r.statusText);
      S.models = j.models;
      S.sel = S.models.length ? S.models[0].name : null;
    } catch (e) {
      showError(String(e.message || e));
    }
    applyLang();
    document.body.dataset.ready = "1";
  }

  init();
})();
