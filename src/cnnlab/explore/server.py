"""The HTTP side of `cnnlab explore`: the standard library's ThreadingHTTPServer, and its rules.

Routes (JSON unless said otherwise):
    GET  /                      the page (HTML); /static/{app,i18n,maps,formula}.js, /static/style.css
    GET  /api/models            {"models": [Explorer.info(), ...]}
    GET  /api/sample[?index=N]  a bundled MNIST test digit: {"index", "label", "png" (base64)}
    POST /api/predict?model=NAME[&maps=0]          body: an image file -> Explorer.predict
    POST /api/formula?model=NAME&layer=L&p=P&i=I&j=J body: an image file -> Explorer.formula

Safety, for a page that runs on a student's machine while they browse elsewhere:
- the Host header must name this server by an IP literal or `localhost` with its port (a DNS
  rebinding page, whose Host is its own domain, is refused: 403); on a loopback bind only
  loopback addresses;
- a POST whose Origin (or Sec-Fetch-Site) says it comes from another site is refused (403);
- a body needs a Content-Length and may not exceed MAX_BODY (413); images are decoded from memory
  with a pixel limit (`inputs.decode_image`, 400); nothing in a request names a file or is
  unpickled; every error is a JSON {"error": ...}, and one failing request never stops the server;
- the page may load scripts, styles and data only from this server (Content-Security-Policy).
"""

from __future__ import annotations

import base64
import io
import ipaddress
import json
import random
import socket
import sys
import threading
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from urllib.parse import parse_qs, urlsplit

from cnnlab.atomic import json_ready
from cnnlab.explore.inputs import ImageError, decode_image

MAX_BODY = 5 * 1024 * 1024
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
STATIC = {  # URL path -> (file in cnnlab/explore/static, content type); nothing else is served
    "/": ("index.html", "text/html; charset=utf-8"),
    "/static/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/static/i18n.js": ("i18n.js", "text/javascript; charset=utf-8"),
    "/static/maps.js": ("maps.js", "text/javascript; charset=utf-8"),
    "/static/formula.js": ("formula.js", "text/javascript; charset=utf-8"),
    "/static/style.css": ("style.css", "text/css; charset=utf-8"),
}


class HttpError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


class Samples:
    """Bundled MNIST test digits for the "random test image" button (loaded on first use)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._test = None
        self._random = random.Random()

    def get(self, index=None) -> dict:
        from PIL import Image

        with self._lock:
            if self._test is None:
                from cnnlab.data import load_mnist
                self._test = load_mnist("bundled", "lab").test
            test = self._test
        if index is None:
            index = self._random.randrange(len(test))
        if not 0 <= index < len(test):
            raise HttpError(400, f"index must lie in 0..{len(test) - 1}, got {index}")
        buf = io.BytesIO()
        Image.fromarray(test.raw[index].numpy()).save(buf, format="PNG")
        return {"index": index, "label": int(test.labels[index]),
                "png": base64.b64encode(buf.getvalue()).decode("ascii")}


class ExploreServer(ThreadingHTTPServer):
    """Binds at construction (so the URL is known before models load); `app` is set later."""

    daemon_threads = True
    block_on_close = False
    request_queue_size = 64   # a browser opens several connections at once; a full backlog
                              # drops SYNs, which the client retries only after a second

    def __init__(self, host: str, port: int):
        self.address_family = socket.AF_INET6 if ":" in host else socket.AF_INET
        super().__init__((host, port), Handler)
        self.host, self.port = host, self.server_address[1]
        self.explorers = {}
        self.samples = Samples()
        self.static = {path: resources.files("cnnlab.explore").joinpath("static", name).read_bytes()
                       for path, (name, _) in STATIC.items()}
        ip = ipaddress.ip_address(host) if host != "localhost" else ipaddress.ip_address("127.0.0.1")
        self._any = ip.is_unspecified
        self._loopback = ip.is_loopback
        self._ip = ip

    @property
    def url(self) -> str:
        host = "127.0.0.1" if self._any or self.host == "localhost" else self.host
        return f"http://[{host}]:{self.port}/" if ":" in host else f"http://{host}:{self.port}/"

    def host_allowed(self, netloc: str | None) -> bool:
        """Is `netloc` (a Host header or an Origin's host:port) a name of this server?"""
        if not netloc:
            return False
        try:
            parts = urlsplit("//" + netloc)
            name, port = parts.hostname, parts.port or 80
        except ValueError:
            return False
        if port != self.port or not name:
            return False
        if name == "localhost":
            return self._loopback or self._any
        try:
            ip = ipaddress.ip_address(name)
        except ValueError:
            return False  # any other host name: possibly a rebinding attacker's domain
        if self._any:
            return True
        return ip.is_loopback if self._loopback else ip == self._ip


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"   # keep-alive: the page sends a request per stroke
    server_version = "cnnlab-explore"
    sys_version = ""
    timeout = 30                    # a silent client cannot hold a thread forever
    disable_nagle_algorithm = True  # headers and body go out as two writes: no 40 ms ACK wait
    server: ExploreServer

    # --------------------------------------------------------------- plumbing
    def log_message(self, format, *args):  # noqa: A002  (http.server's signature)
        pass  # one line per request would drown the URL and the warnings

    def send_error(self, code, message=None, explain=None):
        # http.server's own errors (bad request line, unsupported method): JSON like ours.
        self._send_json(code, {"error": message or HTTPStatus(code).phrase})

    def _send(self, status: int, body: bytes, content_type: str, extra=()):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("X-Frame-Options", "DENY")
        for name, value in extra:
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, status: int, obj):
        try:
            text = json.dumps(obj, separators=(",", ":"), allow_nan=False)
        except ValueError:  # a diverged model's NaN: JSON has no such number, the page gets null
            text = json.dumps(json_ready(obj), separators=(",", ":"), allow_nan=False)
        self._send(status, text.encode(), "application/json")

    def _check_host(self):
        if not self.server.host_allowed(self.headers.get("Host")):
            raise HttpError(403, "this server answers only to its own address "
                                 f"(Host {self.headers.get('Host')!r} refused)")

    def _handle(self, route):
        try:
            self._check_host()
            status, obj = route()
            self._send_json(status, obj)
        except HttpError as err:
            self._send_json(err.status, {"error": str(err)})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as err:  # a bug must not stop the server: answer 500, keep serving
            traceback.print_exc(file=sys.stderr)
            self.close_connection = True
            self._send_json(500, {"error": f"internal error: {type(err).__name__}: {err}"})

    def _query(self) -> dict:
        return {k: v[-1] for k, v in parse_qs(urlsplit(self.path).query).items()}

    def _int(self, query, name, default=None) -> int:
        raw = query.get(name)
        if raw is None:
            if default is None:
                raise HttpError(400, f"missing query parameter {name}")
            return default
        try:
            return int(raw)
        except ValueError:
            raise HttpError(400, f"query parameter {name} must be an integer, got {raw!r}") from None

    def _explorer(self, query):
        explorers = self.server.explorers
        name = query.get("model") or next(iter(explorers), None)
        if name not in explorers:
            raise HttpError(404, f"unknown model {name!r}; models: {', '.join(explorers)}")
        return explorers[name]

    # ------------------------------------------------------------------- GET
    def do_GET(self):
        path = urlsplit(self.path).path
        if path in STATIC:
            try:
                self._check_host()
            except HttpError as err:
                return self._send_json(err.status, {"error": str(err)})
            extra = [("Content-Security-Policy", CSP)] if path == "/" else []
            return self._send(200, self.server.static[path], STATIC[path][1], extra)
        routes = {"/api/models": self._models, "/api/sample": self._sample}
        self._handle(routes.get(path, self._not_found))

    def _not_found(self):
        raise HttpError(404, f"no such page: {urlsplit(self.path).path}")

    def _models(self):
        return 200, {"models": [e.info() for e in self.server.explorers.values()]}

    def _sample(self):
        query = self._query()
        index = self._int(query, "index", -1)
        return 200, self.server.samples.get(None if index == -1 else index)

    # ------------------------------------------------------------------ POST
    def do_POST(self):
        path = urlsplit(self.path).path
        routes = {"/api/predict": self._predict, "/api/formula": self._formula}
        self._handle(lambda: self._post(routes.get(path)))

    def _post(self, route):
        origin = self.headers.get("Origin")
        if origin is not None:
            parts = urlsplit(origin)
            if parts.scheme != "http" or not self.server.host_allowed(parts.netloc):
                raise HttpError(403, f"cross-origin request from {origin!r} refused")
        if self.headers.get("Sec-Fetch-Site", "same-origin") not in ("same-origin", "none"):
            raise HttpError(403, "cross-site request refused")
        body = self._body()
        if route is None:
            self._not_found()
        try:
            img = decode_image(body)
        except ImageError as err:
            raise HttpError(400, str(err)) from None
        return route(img)

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self.close_connection = True
            raise HttpError(411, "send the image with a Content-Length (chunked bodies are not read)")
        raw = self.headers.get("Content-Length")
        if raw is None:
            self.close_connection = True
            raise HttpError(411, "a Content-Length header is required")
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True
            raise HttpError(400, f"bad Content-Length {raw!r}")
        if length > MAX_BODY:
            self.close_connection = True  # the unread body must not be parsed as a request
            raise HttpError(413, f"body of {length:,} bytes is over the {MAX_BODY:,}-byte limit")
        return self.rfile.read(length)

    def _predict(self, img):
        query = self._query()
        return 200, self._explorer(query).predict(img, maps=query.get("maps", "1") != "0")

    def _formula(self, img):
        query = self._query()
        explorer = self._explorer(query)
        layer = query.get("layer") or next(iter(explorer.convs), "")
        args = [self._int(query, name) for name in ("p", "i", "j")]
        try:
            return 200, explorer.formula(img, layer, *args)
        except KeyError as err:
            raise HttpError(404, err.args[0]) from None
        except ValueError as err:
            raise HttpError(400, str(err)) from None
