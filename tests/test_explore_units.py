"""`cnnlab explore` pieces in this process: image decoding, input preparation, layer capture, the
CLI's start-up (URL first, checkpoint discovery, the LeNet it trains when there is none)."""

from __future__ import annotations

import argparse
import base64
import io
import os
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.explore import inputs
from cnnlab.explore.inference import Explorer, encode
from cnnlab.models import build_model

from explore_helpers import digit_png


def _encoded(img: Image.Image, fmt: str) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "BMP", "GIF", "WEBP"])
def test_decode_image_reads_the_usual_formats(fmt):
    img = Image.new("RGB", (40, 30), (200, 10, 10))
    assert inputs.decode_image(_encoded(img, fmt)).size == (40, 30)


def test_decode_image_refuses_other_formats_and_bombs():
    with pytest.raises(inputs.ImageError, match="not an image"):
        inputs.decode_image(_encoded(Image.new("L", (8, 8)), "TIFF"))
    side = int(inputs.MAX_PIXELS ** 0.5) + 1
    bomb = _encoded(Image.new("1", (side, side)), "PNG")
    assert len(bomb) < 100_000   # small on disk, 16.8 MP decoded
    with pytest.raises(inputs.ImageError, match="pixels"):
        inputs.decode_image(bomb)
    assert Image.MAX_IMAGE_PIXELS != inputs.MAX_PIXELS   # Pillow's global is left alone


def test_transparent_upload_is_composited_onto_white():
    img = Image.new("RGBA", (28, 28), (0, 0, 0, 0))      # transparent, black ink nowhere
    grey = np.asarray(inputs.decode_image(_encoded(img, "PNG")).convert("L"))
    assert grey.min() == 255


def test_mnist_preparation_is_the_labs_and_fills_every_channel():
    from cnnlab.data.mnist import preprocess

    img = Image.open(io.BytesIO(digit_png()))
    raw28 = np.asarray(img.convert("L").resize((28, 28), Image.Resampling.BILINEAR))
    expected = preprocess(raw28[None])                     # the lab's 28->32 + normalisation
    one = inputs.mnist_spec(1).prepare(img)
    torch.testing.assert_close(one.x, expected)
    np.testing.assert_allclose(one.grey, expected[0, 0].numpy() * 127.5 + 127.5, atol=1e-4)
    three = inputs.mnist_spec(3).prepare(img)
    assert three.x.shape == (1, 3, 32, 32) and torch.equal(three.x[:, 2], expected[:, 0])


def test_rgb_preparation_normalises_per_channel():
    img = Image.new("RGB", (64, 64), (255, 0, 51))
    spec = inputs.rgb_spec(3, mean=(0.5, 0.25, 0.2), std=(0.5, 0.25, 0.1))
    x = spec.prepare(img).x
    assert x.shape == (1, 3, 32, 32)
    torch.testing.assert_close(x[0, :, 0, 0], torch.tensor([1.0, -1.0, 0.0]))
    assert "assumed" in inputs.rgb_spec(3).description


def test_input_spec_follows_the_checkpoints_data_source(monkeypatch):
    model = build_model("resnet18-cifar", in_channels=3)
    payload = {"model": {"kwargs": {"in_channels": 3}}, "config": {"data": "bundled"}}
    spec = inputs.input_spec(payload, model)
    assert (spec.kind, spec.channels) == ("mnist", 3)
    spec = inputs.input_spec({"config": {"data": "cifar10:/data"}}, model)
    assert (spec.kind, spec.channels) == ("rgb", 3)     # channels read from the model itself
    # the std the run trained with: the notebook's for the lab recipe, per channel for the fast
    assert "0.2023" in inputs.input_spec({"config": {"data": "cifar10:/d", "normalize": "lab"}},
                                         model).description
    assert "0.247" in inputs.input_spec({"config": {"data": "cifar10:/d",
                                                    "normalize": "channel"}}, model).description
    monkeypatch.setattr(inputs, "_KINDS", list(inputs._KINDS))
    inputs.register_input_kind("svhn", lambda c, config: inputs.rgb_spec(c, (0.4,) * c, (0.2,) * c))
    spec = inputs.input_spec({"config": {"data": "svhn:x"}}, model)
    assert "mean [0.4" in spec.description


def test_encode_roundtrip_within_half_a_step():
    t = torch.randn(3, 5, 7)
    enc = encode(t)
    q = np.frombuffer(base64.b64decode(enc["q"]), dtype=np.uint8).reshape(3, 5, 7)
    back = enc["lo"] + q * (enc["hi"] - enc["lo"]) / 255
    assert np.abs(back - t.numpy()).max() <= (enc["hi"] - enc["lo"]) / 510 + 1e-6
    sym = encode(torch.tensor([-1.0, 3.0]), symmetric=True)
    assert (sym["lo"], sym["hi"]) == (-3.0, 3.0)


def test_lenet_relu_rows_are_what_the_next_layer_receives():
    torch.manual_seed(0)
    model = build_model("lenet")
    explorer = Explorer("lenet", model, {"model": {"name": "lenet", "kwargs": {}}})
    seen = {}

    def keep_input(name):
        def hook(module, args, output):
            seen[name] = args[0].detach()   # returns None: the output is left as it is
        return hook

    handles = [getattr(model, name).register_forward_hook(keep_input(name))
               for name in ("pool2", "conv3", "pool4", "linear7")]
    img = Image.open(io.BytesIO(digit_png()))
    x = explorer.spec.prepare(img).x
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    records = {name: out for name, _, out in explorer._forward(x)[1]}
    torch.testing.assert_close(records["conv1.relu"], seen["pool2"])
    torch.testing.assert_close(records["conv3.relu"], seen["pool4"])
    torch.testing.assert_close(records["linear6.relu"], seen["linear7"])
    expected = F.conv2d(seen["conv3"], model.conv3.weight, model.conv3.bias)
    torch.testing.assert_close(records["conv3"], expected, atol=1e-5, rtol=1e-5)


def test_resnet_block_relu_is_recorded_once_and_the_block_output_separately():
    model = build_model("resnet18-plain").eval()
    explorer = Explorer("plain", model, {"model": {"name": "resnet18-plain"}})
    names = [n for n, _, _ in explorer._forward(torch.randn(1, 1, 32, 32))[1]]
    assert names.count("layer1.0.relu") == 1 and "layer1.0" in names
    assert "layer2.0.downsample.0" not in names   # the plain net never calls its shortcut


def _args(**kw):
    base = {"checkpoints": [], "host": "127.0.0.1", "port": 0, "no_browser": True, "threads": None}
    return argparse.Namespace(**{**base, **kw})


def test_start_prints_the_url_first_and_warns_on_all_interfaces(tmp_path, capsys):
    from cnnlab.cli import explore as cli
    from cnnlab.models import build_model as bm
    from cnnlab.train.checkpoint import model_payload, save_checkpoint

    ckpt = save_checkpoint(tmp_path / "m.pt", model_payload("lenet", {}, bm("lenet")))
    server = cli.start(_args(checkpoints=[ckpt], host="0.0.0.0"))
    try:
        out, err = capsys.readouterr()
        assert out.splitlines()[0] == f"http://127.0.0.1:{server.port}/"
        assert "warning" in err and "every network interface" in err
        assert list(server.explorers) == ["m"]
    finally:
        server.server_close()


def test_newest_best_and_the_fallback_lenet(tmp_path, capsys, monkeypatch):
    from cnnlab.cli import explore as cli

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli, "FALLBACK_EPOCHS", 1)
    monkeypatch.setattr(cli, "FALLBACK_SPLIT", "lab")   # 16 steps: the path, not the accuracy
    server = cli.start(_args())   # nothing here: trains a LeNet first
    server.server_close()
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("http://127.0.0.1:") and "training a LeNet" in out[1]
    assert "test accuracy" in out[2] and (tmp_path / cli.FALLBACK_DIR / "best.pt").is_file()
    assert server.explorers["explore-lenet"].arch == "lenet"

    older = tmp_path / "runs" / "explore-lenet" / "best.pt"
    newer = tmp_path / "runs" / "mine" / "best.pt"
    newer.parent.mkdir()
    newer.write_bytes(older.read_bytes())
    os.utime(older, (time.time() - 100, time.time() - 100))
    assert cli.newest_best() == newer.relative_to(tmp_path)
    server = cli.start(_args())
    server.server_close()
    assert "using the newest runs/mine/best.pt" in capsys.readouterr().out


@pytest.mark.parametrize("argv, words", [
    (["explore", "missing.pt"], "not found"),
    (["explore", "--host", "example.com"], "IP address"),
    (["explore", "--port", "70000"], "0..65535"),
    (["explore", "x.pdparams"], "convert-paddle"),
])
def test_cli_mistakes_are_one_line(argv, words, capsys, tmp_path, monkeypatch):
    from cnnlab.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "x.pdparams").write_bytes(b"\x80\x04N.")
    assert main(argv + ["--no-browser"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and len(err.strip().splitlines()) == 1 and words in err


def test_a_diverged_model_gets_null_not_nan(capsys):
    import http.client
    import json
    import threading

    from cnnlab.explore.server import ExploreServer

    model = build_model("lenet-native")
    with torch.no_grad():
        model.linear7.bias.fill_(float("nan"))
    server = ExploreServer("127.0.0.1", 0)
    server.explorers = {"nan": Explorer("nan", model, {"model": {"name": "lenet-native"}})}
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=20)
        conn.request("POST", "/api/predict?model=nan", body=digit_png())
        resp = conn.getresponse()
        body = json.loads(resp.read(), parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
        conn.close()
    finally:
        server.shutdown()
        server.server_close()
    assert resp.status == 200 and body["probs"] == [None] * 10
    assert body["layers"][0]["name"] == "conv1" and body["layers"][0]["q"]
