"""The README's picture of `cnnlab explore` (docs/explore.png), taken in Debian's headless Chromium.

    python scripts/explore_screenshot.py CKPT [CKPT ...] [--digit 0] [--out docs/explore.png]

Starts the real server with the checkpoints, uploads the bundled MNIST test digit --digit (as a
student's file), clicks a pixel of the first model's conv3 map (or its second convolution) so
that formula 5.13 is written out, and saves the 1400x1000 view as a palette PNG (< 300 KB).
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from explore_helpers import ServerProcess, png_of  # noqa: E402

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def main(argv=None) -> int:
    from playwright.sync_api import sync_playwright

    from cnnlab.data import load_mnist

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoints", nargs="+", metavar="CKPT")
    ap.add_argument("--digit", type=int, default=0, help="index in the bundled test split")
    ap.add_argument("--pixel", default="3,4,4", help="p,i,j of the clicked conv pixel")
    ap.add_argument("--out", default=str(ROOT / "docs" / "explore.png"))
    args = ap.parse_args(argv)

    png = png_of(load_mnist("bundled", "lab").test.raw[args.digit].numpy())
    server = ServerProcess(*(Path(c).resolve() for c in args.checkpoints))
    try:
        server.wait_for("models:", timeout=120)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(server.url)
            page.wait_for_selector("body[data-ready='1']")
            page.set_input_files("#upload", files=[{"name": "digit.png", "mimeType": "image/png",
                                                    "buffer": png}])
            page.wait_for_selector("#prediction[data-pred]")
            page.wait_for_selector("body[data-busy='0']")
            layer = page.locator("#layers .layer[data-kind='conv']").nth(1).get_attribute("data-layer")
            canvas = page.locator(f"#layers canvas[data-layer='{layer}']")
            g = canvas.evaluate("c => ({cols: c._grid.cols, H: c._grid.H, W: c._grid.W, "
                                "gap: c._grid.gap, unit: c._grid.zoom * c._grid.scale})")
            p, i, j = (int(v) for v in args.pixel.split(","))
            ox, oy = (p % g["cols"]) * (g["W"] + g["gap"]), (p // g["cols"]) * (g["H"] + g["gap"])
            canvas.click(position={"x": (ox + j + 0.5) * g["unit"], "y": (oy + i + 0.5) * g["unit"]})
            page.wait_for_selector("#formula[data-ready='1']")
            page.evaluate("() => window.scrollTo(0, 0)")
            shot = page.screenshot()
            browser.close()
    finally:
        server.close()
    img = Image.open(io.BytesIO(shot)).convert("RGB").quantize(colors=128, dither=Image.Dither.NONE)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    img.save(out, optimize=True)
    print(f"{out}: {out.stat().st_size / 1024:.0f} KB, {img.size[0]}x{img.size[1]}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
