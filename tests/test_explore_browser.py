"""`cnnlab explore` in a real browser: Debian's headless Chromium driven by Playwright.

The server runs as `cnnlab explore --port 0 --no-browser LENET RESNET18 RGB` (a subprocess shared
with the API tests, see explore_helpers.shared_server); one page
is used by the tests in this file's order (draw, maps, formula, language, sample, upload), and
the last test checks what the page did all along: no request to another host, no console error.
Without Chromium (or Playwright) the tests skip with a message, except in CI (CI=true): fail.
"""

from __future__ import annotations

import http.client
import io
import json
import os
import shutil
from urllib.parse import urlsplit

import pytest
import torch.nn.functional as F
from PIL import Image

from cnnlab.data import load_mnist
from cnnlab.data.images import prepare_image
from cnnlab.train.checkpoint import load_checkpoint

from explore_helpers import ckpts, png_of, server  # noqa: F401  (fixtures)

CHROMIUM = os.environ.get("CNNLAB_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 20_000


def _unavailable(reason: str):
    if os.environ.get("CI") == "true":
        pytest.fail(f"browser tests must run in CI: {reason} (.ci/run installs chromium)")
    pytest.skip(f"{reason}; install Debian's chromium (apt-get install chromium) to run them")


@pytest.fixture(scope="module")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("Playwright for Python is not installed (pip install -e '.[dev]')")
    if not (os.path.isfile(CHROMIUM) or shutil.which(CHROMIUM)):
        _unavailable(f"no Chromium at {CHROMIUM}")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, timeout=TIMEOUT_MS)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(TIMEOUT_MS)
    pg.log = {"requests": [], "console": [], "predict_bodies": []}
    pg.on("request", lambda r: pg.log["requests"].append(r.url))
    pg.on("request", lambda r: r.url.split("?")[0].endswith("/api/predict")
          and "model=lenet" in r.url and pg.log["predict_bodies"].append(r.post_data_buffer))
    pg.on("console", lambda m: pg.log["console"].append((m.type, m.text)))
    pg.on("pageerror", lambda e: pg.log["console"].append(("pageerror", str(e))))
    pg.goto(server.url)
    pg.wait_for_selector("body[data-ready='1']")
    yield pg
    context.close()


def draw_seven(pg):
    box = pg.locator("#draw").bounding_box()
    points = [(70, 60), (210, 60), (120, 230)]
    pg.mouse.move(box["x"] + points[0][0], box["y"] + points[0][1])
    pg.mouse.down()
    for (x0, y0), (x1, y1) in zip(points, points[1:]):
        for k in range(1, 9):
            pg.mouse.move(box["x"] + x0 + (x1 - x0) * k / 8, box["y"] + y0 + (y1 - y0) * k / 8)
    pg.mouse.up()
    settle(pg)


def settle(pg):
    """Wait until every model's newest request has come back."""
    pg.wait_for_selector("#prediction[data-pred]")
    pg.wait_for_selector("body[data-busy='0']")


def test_drawing_a_stroke_gives_a_prediction_for_every_model(page):
    assert page.locator("#prediction[data-pred]").count() == 0
    draw_seven(page)
    pred = int(page.get_attribute("#prediction", "data-pred"))
    assert 0 <= pred <= 9
    assert page.locator("#probs .prob-row").count() == 10
    cards = page.locator(".model-card .mpred").all_inner_texts()
    assert len(cards) == 3 and all(c.isdigit() for c in cards)   # side by side
    assert page.locator("#prediction .digit").inner_text() == str(pred)


def _distinct_colours(pg, selector) -> list[int]:
    return pg.locator(selector).evaluate_all("""cs => cs.map(c => {
        if (!c.width || !c.height) return 0;
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const seen = new Set();
        for (let k = 0; k < d.length; k += 4) seen.add((d[k] << 16) | (d[k+1] << 8) | d[k+2]);
        return seen.size; })""")


def test_feature_maps_are_drawn_and_not_blank(page):
    names = page.locator("#layers .layer").evaluate_all("ls => ls.map(l => l.dataset.layer)")
    assert names[:3] == ["conv1", "conv1.relu", "pool2"] and "linear7" in names
    counts = _distinct_colours(page, "#layers canvas.map")
    assert len(counts) == len(names) and all(n > 2 for n in counts), dict(zip(names, counts))
    for sel in ("#model-input", "#edges", "#kernels"):
        assert _distinct_colours(page, sel)[0] > 2, sel
    assert page.locator("#layers .layer[data-layer='conv3'] .shape").inner_text() == "[1, 16, 10, 10]"


def _click_value(pg, layer, c, y, x):
    canvas = pg.locator(f"#layers canvas[data-layer='{layer}']")
    canvas.scroll_into_view_if_needed()
    g = canvas.evaluate("c => ({cols: c._grid.cols, H: c._grid.H, W: c._grid.W, gap: c._grid.gap,"
                        " unit: c._grid.zoom * c._grid.scale})")
    ox, oy = (c % g["cols"]) * (g["W"] + g["gap"]), (c // g["cols"]) * (g["H"] + g["gap"])
    canvas.click(position={"x": (ox + x + 0.5) * g["unit"], "y": (oy + y + 0.5) * g["unit"]})


def test_clicked_pixel_formula_equals_the_map_value(page, ckpts):
    p, i, j = 2, 6, 14                                 # conv1, map 2, on the 7's top bar
    _click_value(page, "conv1", p, i, j)
    page.wait_for_selector("#formula[data-ready='1']")
    f = page.locator("#formula").evaluate("e => ({...e.dataset})")
    assert (f["layer"], int(f["p"]), int(f["i"]), int(f["j"])) == ("conv1", p, i, j)
    total = float(f["sum"]) + float(f["bias"])
    assert total == pytest.approx(float(f["map"]), abs=1e-5)
    assert float(f["reference"]) == pytest.approx(total, abs=1e-5) and f["agree"] == "true"
    assert abs(float(f["approx"]) - total) <= float(f["step"]) / 2 + 1e-5   # the pixel on screen
    # the value from torch's own conv on the image the page actually sent
    state = load_checkpoint(ckpts["lenet"])["state_dict"]
    x = prepare_image(Image.open(io.BytesIO(page.log["predict_bodies"][-1])))[1]
    expected = F.conv2d(x, state["conv1.weight"], state["conv1.bias"])[0, p, i, j]
    assert total == pytest.approx(float(expected), abs=1e-4)
    assert page.locator("#formula .channel").count() == 1
    assert page.locator("#formula table.win td").count() == 25
    assert page.locator("#layers .marker").count() == 1


def test_language_switch(page):
    assert page.locator("#title").inner_text().startswith("cnnlab explore")
    page.click("#lang")
    assert page.get_attribute("html", "lang") == "zh-CN"
    assert "卷积" in page.locator("#title").inner_text()
    assert page.locator("#clear").inner_text() == "清除"
    assert "偏置" in page.locator("#formula .totals").inner_text()
    assert "预测为" in page.locator("#prediction").inner_text()
    page.click("#lang")
    assert page.get_attribute("html", "lang") == "en"
    assert page.locator("#clear").inner_text() == "Clear"


def test_random_test_image_shows_its_true_label(page):
    page.click("#sample")
    page.wait_for_selector("#sample-label:has-text('true label')")
    settle(page)
    label = int(page.locator("#sample-label").inner_text().rsplit(":", 1)[1])
    assert 0 <= label <= 9


def test_upload_a_file(page, server):
    test = load_mnist("bundled", "lab").test
    png = png_of(255 - test.raw[0].numpy())            # dark ink on white paper, as a scan
    before = len(page.log["predict_bodies"])
    page.set_input_files("#upload", files=[{"name": "digit.png", "mimeType": "image/png",
                                            "buffer": png}])
    settle(page)
    assert len(page.log["predict_bodies"]) > before and page.log["predict_bodies"][-1] == png
    # the page shows what the API answers for the same file (inverted automatically)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
    conn.request("POST", "/api/predict?model=lenet&maps=0", body=png)
    expected = json.loads(conn.getresponse().read())["pred"]
    conn.close()
    assert int(page.get_attribute("#prediction", "data-pred")) == expected
    page.set_input_files("#upload", files=[{"name": "notes.txt", "mimeType": "text/plain",
                                            "buffer": b"not an image"}])
    page.wait_for_selector("#error:not([hidden])")
    assert "not an image" in page.locator("#error").inner_text()


def test_no_request_to_another_host_and_no_console_error(page, server):
    here = urlsplit(server.url).netloc
    hosts = {urlsplit(u).netloc for u in page.log["requests"] if not u.startswith(("data:", "blob:"))}
    assert hosts == {here}, hosts
    problems = [(kind, text) for kind, text in page.log["console"]
                if kind in ("error", "pageerror", "warning")]
    # Chromium logs each 4xx answer; the only ones are the three models' 400 for the text file
    # uploaded on purpose above
    expected = [("error", "Failed to load resource: the server responded with a status of 400 "
                          "(Bad Request)")] * 3
    assert problems == expected
