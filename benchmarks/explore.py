"""Latency of `cnnlab explore`: a drawn digit -> prediction and every feature map.

    python benchmarks/explore.py [--requests 200] [--browser] [--json] [CKPT ...]

Server side (always): the real server (`cnnlab explore --port 0 --no-browser`, a subprocess)
serves a LeNet and a ResNet18 (random weights unless CKPTs are given: latency does not depend on
them). One keep-alive HTTP connection POSTs 280x280 PNG strokes, as the page's canvas sends them,
to /api/predict?model=NAME and reads the whole JSON (prediction, probabilities, all maps);
requests alternate between the models (A B A B) after 10 warm-up requests each. Reported per
model: p50 / p95 / max of the round trip, the server's own compute time ("ms" in the JSON:
preparation, forward pass with hooks, encoding) and the response size. Targets (p95): LeNet
<= 100 ms, ResNet18 <= 300 ms, from the image to maps on screen.

--browser (needs Debian's chromium and Playwright): the same page a student uses, in headless
Chromium, with both models loaded; each stroke is drawn with mouse events, and the page's own
timer runs from the canvas' PNG encoding to the updated canvases (window.cnnlabTimings). Both
models answer every stroke, one after the other (one inference worker), as on a student's screen.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))  # ServerProcess: start the real CLI, read its URL

from explore_helpers import ServerProcess  # noqa: E402

from cnnlab.runinfo import cpu_model  # noqa: E402

TARGETS_MS = {"lenet": 100.0, "resnet18": 300.0}
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def strokes(n: int, seed: int = 0) -> list[bytes]:
    """n different white-on-black digit-like strokes as 280x280 PNGs."""
    rng = np.random.RandomState(seed)
    out = []
    for _ in range(n):
        img = Image.new("L", (280, 280), 0)
        pts = [tuple(rng.randint(40, 240, 2)) for _ in range(rng.randint(2, 5))]
        ImageDraw.Draw(img).line(pts, fill=255, width=20, joint="curve")
        buf = io.BytesIO()
        img.save(buf, format="PNG")
        out.append(buf.getvalue())
    return out


def make_models(folder: Path) -> list[Path]:
    import torch

    from cnnlab.models import build_model
    from cnnlab.train.checkpoint import model_payload, save_checkpoint

    torch.manual_seed(0)
    paths = []
    for name in ("lenet", "resnet18"):
        path = folder / name / "best.pt"
        save_checkpoint(path, model_payload(name, {"in_channels": 1}, build_model(name).eval()))
        paths.append(path)
    return paths


def percentiles(values) -> dict:
    a = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(a, 50)), "p95": float(np.percentile(a, 95)),
            "max": float(a.max()), "n": int(a.size), "over_500ms": int((a > 500).sum())}


def server_side(server, names, images, requests) -> dict:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)

    def one(name, png):
        t = time.perf_counter()
        conn.request("POST", f"/api/predict?model={name}", body=png,
                     headers={"Content-Type": "image/png"})
        data = conn.getresponse().read()
        elapsed = (time.perf_counter() - t) * 1000
        body = json.loads(data)
        assert "layers" in body and body["layers"][0].get("q"), body.get("error")
        return elapsed, body["ms"], len(data)

    for k in range(10):
        for name in names:
            one(name, images[k % len(images)])
    rows = {name: {"round_trip_ms": [], "server_ms": [], "bytes": []} for name in names}
    for k in range(requests):
        order = names if k % 2 == 0 else names[::-1]
        for name in order:
            rt, ms, size = one(name, images[k % len(images)])
            rows[name]["round_trip_ms"].append(rt)
            rows[name]["server_ms"].append(ms)
            rows[name]["bytes"].append(size)
    conn.close()
    return {name: {"round_trip_ms": percentiles(r["round_trip_ms"]),
                   "server_ms": percentiles(r["server_ms"]),
                   "response_kb": statistics.median(r["bytes"]) / 1024} for name, r in rows.items()}


def browser_side(server, names, requests) -> dict | str:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return "skipped: Playwright is not installed"
    chromium = os.environ.get("CNNLAB_CHROMIUM", "/usr/bin/chromium")
    if not os.path.isfile(chromium):
        return f"skipped: no Chromium at {chromium}"
    rng = np.random.RandomState(1)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(60_000)
        page.goto(server.url)
        page.wait_for_selector("body[data-ready='1']")
        box = page.locator("#draw").bounding_box()
        for k in range(requests + 5):
            if k % 8 == 0:
                page.click("#clear")
            x0, y0, x1, y1 = (float(v) for v in rng.randint(40, 240, 4))
            page.mouse.move(box["x"] + x0, box["y"] + y0)
            page.mouse.down()
            page.mouse.move(box["x"] + x1, box["y"] + y1)
            page.mouse.up()
            page.wait_for_selector("body[data-busy='0']")
            if k == 4:
                page.evaluate("() => { window.cnnlabTimings.length = 0; }")   # warm-up done
        timings = page.evaluate("() => window.cnnlabTimings")
        browser.close()
    return {name: percentiles([t["total"] for t in timings if t["model"] == name]) for name in names}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="*", metavar="CKPT",
                    help="a LeNet and a ResNet18 checkpoint (default: random weights)")
    ap.add_argument("--requests", type=int, default=200, help="requests per model (default 200)")
    ap.add_argument("--browser", action="store_true", help="also time the page in headless Chromium")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="cnnlab-bench-explore-") as tmp:
        paths = args.checkpoints or make_models(Path(tmp))
        server = ServerProcess(*paths)
        try:
            server.wait_for("models:", timeout=120)
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
            conn.request("GET", "/api/models")
            names = [m["name"] for m in json.loads(conn.getresponse().read())["models"]]
            conn.close()
            result = {"cpu": cpu_model(), "load_average": os.getloadavg()[0],
                      "threads_note": "server: torch's default threads",
                      "requests_per_model": args.requests,
                      "server": server_side(server, names, strokes(50), args.requests)}
            if args.browser:
                result["browser"] = {"both": browser_side(server, names, args.requests)}
        finally:
            server.close()
        if args.browser and not isinstance(result["browser"]["both"], str):
            for name, path in zip(names, paths):   # the page with this model alone
                alone = ServerProcess(path)
                try:
                    alone.wait_for("models:", timeout=120)
                    result["browser"][name] = browser_side(alone, [name], args.requests)[name]
                finally:
                    alone.close()

    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['cpu']}, load average {result['load_average']:.1f} at start, "
          f"{args.requests} requests per model, interleaved")
    print(f"{'model':10} {'round trip p50 / p95 / max (ms)':>34} {'server compute p50 / p95':>26} "
          f"{'JSON':>8}  target p95")
    for name, r in result["server"].items():
        rt, sv = r["round_trip_ms"], r["server_ms"]
        target = TARGETS_MS.get(name)
        verdict = "" if target is None else \
            f"{target:.0f} ms {'PASS' if rt['p95'] <= target else 'FAIL'}"
        print(f"{name:10} {rt['p50']:14.1f} / {rt['p95']:6.1f} / {rt['max']:6.1f} "
              f"{sv['p50']:15.1f} / {sv['p95']:6.1f} {r['response_kb']:6.0f} kB  {verdict}")
    if "browser" in result:
        both = result["browser"]["both"]
        if isinstance(both, str):
            print(f"browser: {both}")
            return 0
        print("browser, headless Chromium: the canvas' PNG -> prediction and every map drawn")
        rows = [(f"{name}, alone", result["browser"][name], TARGETS_MS.get(name)) for name in both]
        rows += [(f"{name}, both loaded", r, None) for name, r in both.items()]
        for label, r, target in rows:
            verdict = "" if target is None else \
                f"  {target:.0f} ms {'PASS' if r['p95'] <= target else 'FAIL'}"
            print(f"{label:22} p50 / p95 / max {r['p50']:6.1f} / {r['p95']:6.1f} / {r['max']:6.1f} ms, "
                  f"{r['n']} requests ({r['over_500ms']} over 500 ms){verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
