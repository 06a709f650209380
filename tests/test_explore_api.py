"""`cnnlab explore` without a browser: the JSON API against torch, and the server's safety rules.

One real server (`cnnlab explore --port 0 --no-browser CKPT...` in a subprocess, shared with the
browser tests) serves three checkpoints: a LeNet trained 40 steps, a random ResNet18 and a random
3-channel LeNet.
Expected numbers come from torch's own layers (F.conv2d, NativeLeNet), not from cnnlab's ops.
"""

from __future__ import annotations

import base64
import http.client
import io
import json
import re
import socket

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cnnlab.data import load_mnist
from cnnlab.data.images import prepare_image
from cnnlab.models import build_model
from cnnlab.train.checkpoint import load_checkpoint

from explore_helpers import ckpts, digit_png, server  # noqa: F401  (fixtures)


def request(server, method, path, body=None, headers=None, timeout=30):
    """-> (status, parsed JSON or raw bytes, response headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
        kind = resp.getheader("Content-Type", "")
        return resp.status, json.loads(data) if kind.startswith("application/json") else data, resp
    finally:
        conn.close()


def raw_exchange(server, payload: bytes, timeout=10) -> bytes:
    with socket.create_connection(("127.0.0.1", server.port), timeout=timeout) as sock:
        sock.sendall(payload)
        chunks = []
        while True:
            try:
                chunk = sock.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)


def native_lenet(path):
    """The checkpoint's weights in torch's own LeNet layers (independent of cnnlab's ops)."""
    model = build_model("lenet-native")
    model.load_state_dict(load_checkpoint(path)["state_dict"])
    return model.eval()


def model_input(png: bytes) -> torch.Tensor:
    return prepare_image(Image.open(io.BytesIO(png)))[1]      # [1,1,32,32]


def dequantise(row) -> np.ndarray:
    q = np.frombuffer(base64.b64decode(row["q"]), dtype=np.uint8).astype(np.float64)
    return (row["lo"] + q * (row["hi"] - row["lo"]) / 255).reshape(row["shape"][1:])


def test_first_line_is_the_url_and_models_are_listed(server):
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/", server.url)
    status, body, _ = request(server, "GET", "/api/models")
    assert status == 200
    models = {m["name"]: m for m in body["models"]}
    assert list(models) == ["lenet", "resnet18", "rgb"]
    assert models["lenet"]["kernels"]["shape"] == [6, 1, 5, 5]
    assert models["lenet"]["convs"] == ["conv1", "conv3", "conv5"]
    assert models["resnet18"]["kernels"]["shape"] == [64, 1, 7, 7]
    assert models["rgb"]["in_channels"] == 3


def test_predict_lenet_agrees_with_torch_layers(server, ckpts):
    png = digit_png()
    status, body, _ = request(server, "POST", "/api/predict?model=lenet", png,
                              {"Content-Type": "image/png"})
    assert status == 200, body
    model, x = native_lenet(ckpts["lenet"]), model_input(png)
    with torch.no_grad():
        probs = torch.softmax(model(x)[0], 0)
        conv1 = model.conv1(x)[0]
    assert body["model"] == "lenet" and len(body["probs"]) == 10
    assert body["pred"] == int(probs.argmax())
    np.testing.assert_allclose(body["probs"], probs.numpy(), atol=1e-5)
    shapes = {row["name"]: row["shape"] for row in body["layers"]}
    # the lab's printed shapes (5.3.2)
    assert shapes["conv1"] == [1, 6, 28, 28] and shapes["pool2"] == [1, 6, 14, 14]
    assert shapes["conv3"] == [1, 16, 10, 10] and shapes["pool4"] == [1, 16, 5, 5]
    assert shapes["conv5"] == [1, 120, 1, 1] and shapes["linear6"] == [1, 84]
    assert shapes["linear7"] == [1, 10]
    conv1_row = next(r for r in body["layers"] if r["name"] == "conv1")
    step = (conv1_row["hi"] - conv1_row["lo"]) / 255
    assert np.abs(dequantise(conv1_row) - conv1.numpy()).max() <= step / 2 + 1e-5
    relu = next(r for r in body["layers"] if r["name"] == "conv1.relu")
    assert relu["lo"] >= 0 and relu["hi"] == pytest.approx(float(conv1.max()), rel=1e-5)
    assert body["input"]["shape"] == [1, 1, 32, 32] and body["edges"]["shape"] == [1, 30, 30]


def test_predict_resnet18_layers(server):
    _, body, _ = request(server, "POST", "/api/predict?model=resnet18", digit_png())
    shapes = {row["name"]: row["shape"] for row in body["layers"]}
    assert shapes["conv1"] == [1, 64, 16, 16] and shapes["maxpool"] == [1, 64, 8, 8]
    assert shapes["layer2.0.downsample.0"] == [1, 128, 4, 4]
    assert shapes["layer4.1"] == [1, 512, 1, 1] and shapes["fc"] == [1, 10]
    assert [r["kind"] for r in body["layers"][:4]] == ["conv", "bn", "act", "pool"]


def test_three_channel_model_sees_the_grey_digit_on_every_channel(server, ckpts):
    png = digit_png()
    _, body, _ = request(server, "POST", "/api/predict?model=rgb&maps=0", png)
    model = build_model("lenet-native", in_channels=3)
    model.load_state_dict(load_checkpoint(ckpts["rgb"])["state_dict"])
    with torch.no_grad():
        probs = torch.softmax(model.eval()(model_input(png).expand(-1, 3, -1, -1))[0], 0)
    np.testing.assert_allclose(body["probs"], probs.numpy(), atol=1e-5)
    assert body["layers"][0]["shape"] == [1, 6, 28, 28] and "q" not in body["layers"][0]


def test_formula_lenet_conv3_equals_torch(server, ckpts):
    png = digit_png()
    p, i, j = 5, 3, 4
    query = f"model=lenet&layer=conv3&p={p}&i={i}&j={j}"
    status, f, _ = request(server, "POST", f"/api/formula?{query}", png)
    assert status == 200, f
    model, x = native_lenet(ckpts["lenet"]), model_input(png)
    with torch.no_grad():
        layer_in = model.pool2(F.relu(model.conv1(x)))[0]            # [6,14,14]
        expected = F.conv2d(layer_in[None], model.conv3.weight, model.conv3.bias)[0, p, i, j]
    assert len(f["channels"]) == 6 and f["origin"] == [i, j]
    np.testing.assert_allclose(f["channels"][2]["window"], layer_in[2, i:i + 5, j:j + 5], atol=1e-4)
    np.testing.assert_allclose(f["channels"][2]["kernel"], model.conv3.weight[p, 2].detach(), atol=1e-5)
    for key in ("value", "reference", "map_value"):
        assert f[key] == pytest.approx(float(expected), abs=1e-4), key
    assert f["sum"] + f["bias"] == pytest.approx(f["value"], abs=1e-5)
    assert sum(c["sum"] for c in f["channels"]) == pytest.approx(f["sum"], abs=1e-4)
    assert f["agree"] is True


def test_formula_shows_the_padding_of_resnet_stem(server, ckpts):
    png = digit_png()
    _, f, _ = request(server, "POST", "/api/formula?model=resnet18&layer=conv1&p=7&i=0&j=1", png)
    assert f["kernel_size"] == [7, 7] and f["stride"] == [2, 2] and f["padding"] == [3, 3]
    assert f["origin"] == [-3, -1]
    pad = np.array(f["pad"])
    assert pad[:3].all() and pad[:, :1].all() and not pad[3:, 1:].any()
    assert np.all(np.array(f["channels"][0]["window"])[pad] == 0)
    state = load_checkpoint(ckpts["resnet18"])["state_dict"]
    expected = F.conv2d(model_input(png), state["conv1.weight"], state["conv1.bias"], stride=2,
                        padding=3)[0, 7, 0, 1]
    assert f["value"] == pytest.approx(float(expected), abs=1e-4) and f["agree"]


@pytest.mark.parametrize("query, status", [
    ("model=nope&layer=conv1&p=0&i=0&j=0", 404),
    ("model=lenet&layer=pool2&p=0&i=0&j=0", 404),
    ("model=lenet&layer=conv1&p=6&i=0&j=0", 400),
    ("model=lenet&layer=conv1&p=0&i=0&j=x", 400),
    ("model=lenet&layer=conv1&p=0&i=0", 400),
])
def test_formula_bad_queries(server, query, status):
    code, body, _ = request(server, "POST", f"/api/formula?{query}", digit_png())
    assert code == status and isinstance(body["error"], str) and body["error"]


def _bomb_png() -> bytes:
    buf = io.BytesIO()
    Image.new("1", (5000, 5000)).save(buf, format="PNG")   # 25 MP in a few kB
    return buf.getvalue()


@pytest.mark.parametrize("body, words", [
    (b"", "empty"),
    (b"GIF89a but not really an image at all", "not an image"),
    (digit_png()[:300], "truncated"),
    (_bomb_png(), "pixels"),
    (b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94.", "not an image"),  # a pickle
])
def test_bad_images_get_400_json(server, body, words):
    code, reply, _ = request(server, "POST", "/api/predict?model=lenet", body)
    assert code == 400 and words in reply["error"]


def test_body_limits(server):
    head = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
            f"Content-Length: {5 * 1024 * 1024 + 1}\r\n\r\n").encode()
    reply = raw_exchange(server, head)
    assert reply.startswith(b"HTTP/1.1 413") and b'"error"' in reply
    reply = raw_exchange(server, f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{server.port}"
                                 "\r\n\r\n".encode())
    assert reply.startswith(b"HTTP/1.1 411")
    reply = raw_exchange(server, b"\x16\x03\x01 garbage, not HTTP\r\n\r\n")  # e.g. TLS to http
    assert b'"error"' in reply   # http.server answers a request line it cannot parse bare (0.9)


@pytest.mark.parametrize("host, ok", [
    ("127.0.0.1:{port}", True), ("localhost:{port}", True), ("[::1]:{port}", True),
    ("evil.example:{port}", False), ("127.0.0.1:1", False), ("10.0.0.1:{port}", False), ("", False),
])
def test_host_header_is_checked(server, host, ok):
    code, body, _ = request(server, "GET", "/api/models",
                            headers={"Host": host.format(port=server.port)})
    assert code == (200 if ok else 403), body
    code, _, _ = request(server, "GET", "/", headers={"Host": host.format(port=server.port)})
    assert code == (200 if ok else 403)


@pytest.mark.parametrize("headers, ok", [
    ({"Origin": "http://127.0.0.1:{port}"}, True),
    ({"Origin": "http://localhost:{port}", "Sec-Fetch-Site": "same-origin"}, True),
    ({"Origin": "http://evil.example"}, False),
    ({"Origin": "null"}, False),
    ({"Origin": "https://127.0.0.1:{port}"}, False),
    ({"Sec-Fetch-Site": "cross-site"}, False),
])
def test_cross_origin_posts_are_refused(server, headers, ok):
    headers = {k: v.format(port=server.port) for k, v in headers.items()}
    code, body, _ = request(server, "POST", "/api/predict?model=lenet&maps=0", digit_png(), headers)
    assert code == (200 if ok else 403), body


def test_page_and_assets_come_from_the_server_only(server):
    code, html, resp = request(server, "GET", "/")
    assert code == 200 and "default-src 'none'" in resp.getheader("Content-Security-Policy")
    html = html.decode()
    refs = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert refs and all(r.startswith("/static/") or r == "data:," for r in refs), refs
    for ref in refs:
        if ref.startswith("/static/"):
            code, text, _ = request(server, "GET", ref)
            assert code == 200
            text = text.decode()
            assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/|@import|@font-face", text,
                                 re.I), ref
            assert not re.search(r"\burl\(", text), ref   # no CSS url(): no fonts, no images
            targets = re.findall(r"fetch\(\s*[`\"']([^`\"']*)", text)
            assert all(t.startswith("/api/") for t in targets), targets
    assert request(server, "GET", "/static/../pyproject.toml")[0] == 404
    assert request(server, "GET", "/etc/passwd")[0] == 404


def test_server_survives_everything_above(server):
    assert server.proc.poll() is None
    code, body, _ = request(server, "GET", "/api/models")
    assert code == 200 and len(body["models"]) == 3
    code, body, _ = request(server, "GET", "/api/sample?index=1")
    assert code == 200 and body["index"] == 1
    assert body["label"] == int(load_mnist("bundled", "lab").test.labels[1])
    assert request(server, "GET", "/api/sample?index=999")[0] == 400
    assert request(server, "DELETE", "/api/models")[0] == 501
    assert not [line for line in server.stderr if "Traceback" in line]
