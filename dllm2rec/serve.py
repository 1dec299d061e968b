"""A trained student served over HTTP: the model is loaded once, each request is one forward pass.

    python -m dllm2rec serve --model results/students/ml-100k/smollm2-135m/dros/dllm2rec/seed0/model.pt
    curl -s localhost:8000/recommend -d '{"history": [49, 99, 180], "k": 10}'

Endpoints (JSON in, JSON out):

- ``POST /recommend`` with ``{"history": [...], "k": 10, "by": "item_id", "exclude_history": false}``
  (``k``, ``by`` and ``exclude_history`` optional, as in :meth:`dllm2rec.recommend.Recommender.recommend`)
  answers ``{"items": [{"rank", "item_id", "raw_id", "title", "score"}, ...]}``; with
  ``"histories": [[...], ...]`` (at most :data:`MAX_HISTORIES`) instead of ``history`` it answers
  ``{"results": [[...], ...]}``, one list per history, scored in one batch.
- ``GET /health`` answers ``{"status": "ok", "model": {...}}`` (the model's n_items, max_len,
  backbone, method, seed).

A bad request gets a 4xx status with ``{"error": <the reason>}`` (400: not JSON, a wrong field,
an unknown item, an empty history; 404: another path; 405: another method; 411/413: no or a too
large body) and the server goes on; an unexpected failure in one request is a 500 for that
request only. The model and its items are loaded through :meth:`Recommender.load`, so what that
checks (format, dataset) holds here too.

**Library.** The standard library's :class:`http.server.ThreadingHTTPServer`: no dependency is
added to ``envs/student.yaml``, a thread per connection, and the work per request is one
forward pass of a small model, which a lock serialises (torch parallelises the forward itself
over ``threads``). Python's documentation says http.server is not meant for production: it binds
to 127.0.0.1 by default; to serve beyond the machine, put it behind a reverse proxy (TLS, limits),
or call :class:`~dllm2rec.recommend.Recommender` from the web framework you already run
(docs/students.md). An ASGI stack (FastAPI + uvicorn) would add three packages for the same
one-model, CPU-bound work.
"""
from __future__ import annotations

import json
import sys
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from dllm2rec.io import UserError

MAX_BODY = 1 << 20  # bytes of one request's JSON
MAX_HISTORIES = 1024  # histories in one request
FIELDS = {"history", "histories", "k", "by", "exclude_history"}


class BadRequest(Exception):
    """A request the server refuses: (HTTP status, reason)."""

    def __init__(self, status: HTTPStatus, reason: str):
        super().__init__(reason)
        self.status = status


def parse_request(body: bytes, by_values) -> tuple[list, dict, bool]:
    """(histories, keyword arguments of Recommender.recommend, one history given) from a
    request body; :class:`BadRequest` with the reason otherwise. ``by_values``: what ``by`` may
    be (:data:`dllm2rec.recommend.BY`, the first the default)."""
    try:
        req = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"the body is not JSON ({err})") from None
    if not isinstance(req, dict):
        raise BadRequest(HTTPStatus.BAD_REQUEST, 'the body must be a JSON object: {"history": [...], "k": 10}')
    unknown = sorted(set(req) - FIELDS)
    if unknown:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f"unknown field(s) {unknown}; the fields are {sorted(FIELDS)}")
    if ("history" in req) == ("histories" in req):
        raise BadRequest(HTTPStatus.BAD_REQUEST, 'give either "history": [items] or "histories": [[items], ...]')
    single = "history" in req
    histories = [req["history"]] if single else req["histories"]
    if not isinstance(histories, list) or not all(isinstance(h, list) for h in histories):
        raise BadRequest(HTTPStatus.BAD_REQUEST, '"history" must be a list of items ("histories": a list of such lists)')
    if not histories:
        raise BadRequest(HTTPStatus.BAD_REQUEST, '"histories" is empty')
    if len(histories) > MAX_HISTORIES:
        raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"at most {MAX_HISTORIES} histories per request")
    for n, h in enumerate(histories, 1):
        if not h:
            raise BadRequest(HTTPStatus.BAD_REQUEST, f"history {n} is empty: a student needs at least one item")
    k = req.get("k", 10)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f'"k" must be a positive integer, got {k!r}')
    by = req.get("by", by_values[0])
    if by not in by_values:
        raise BadRequest(HTTPStatus.BAD_REQUEST, f'"by" must be one of {list(by_values)}, got {by!r}')
    exclude = req.get("exclude_history", False)
    if not isinstance(exclude, bool):
        raise BadRequest(HTTPStatus.BAD_REQUEST, f'"exclude_history" must be true or false, got {exclude!r}')
    return histories, {"k": k, "by": by, "exclude_history": exclude}, single


def make_server(recommender, host: str = "127.0.0.1", port: int = 8000, quiet: bool = False) -> ThreadingHTTPServer:
    """A server (not yet serving) answering with ``recommender`` (a loaded Recommender); port 0
    picks a free one (``server.server_address``)."""
    from dllm2rec.recommend import BY

    lock = threading.Lock()
    model = {k: recommender.meta.get(k) for k in ("n_items", "max_len", "backbone", "method", "seed")}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a client reuses its connection

        def _send(self, status: HTTPStatus, obj) -> None:
            body = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def _error(self, status: HTTPStatus, reason: str) -> None:
            self._send(status, {"error": reason})

        def do_GET(self):  # noqa: N802 - http.server's name
            if self.path == "/health":
                self._send(HTTPStatus.OK, {"status": "ok", "model": model})
            elif self.path == "/recommend":
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, "POST a JSON body to /recommend")
            else:
                self._error(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}: POST /recommend or GET /health")

        def do_POST(self):  # noqa: N802
            try:
                if self.path != "/recommend":
                    raise BadRequest(HTTPStatus.NOT_FOUND, f"no such path {self.path!r}: POST /recommend")
                length = self.headers.get("Content-Length")
                if length is None or not length.isdigit():
                    raise BadRequest(HTTPStatus.LENGTH_REQUIRED, "send the body with a Content-Length")
                if int(length) > MAX_BODY:
                    self.close_connection = True  # the body is not read
                    raise BadRequest(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"the body is over {MAX_BODY} bytes")
                histories, kwargs, single = parse_request(self.rfile.read(int(length)), BY)
                with lock:
                    results = recommender.recommend(histories, **kwargs)
                self._send(HTTPStatus.OK, {"items": results[0]} if single else {"results": results})
            except BadRequest as err:
                self._error(err.status, str(err))
            except UserError as err:  # an unknown item, a shared title, ...
                self._error(HTTPStatus.BAD_REQUEST, str(err))
            except Exception as err:  # noqa: BLE001 - one request fails, the server goes on
                self._error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{err.__class__.__name__}: {err}")

        def do_PUT(self):  # noqa: N802
            self._error(HTTPStatus.METHOD_NOT_ALLOWED, "POST /recommend or GET /health")

        do_DELETE = do_PATCH = do_PUT

        def log_message(self, format, *args):  # noqa: A002 - http.server's signature
            if not quiet:
                sys.stderr.write(f"{self.address_string()} {format % args}\n")

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        request_queue_size = 256  # the listen backlog (socketserver's 5 refuses a burst of clients)

    return Server((host, port), Handler)


def serve(model: str, port: int = 8000, host: str = "127.0.0.1", data: str | None = None, device: str = "cpu",
          threads: int | None = None, quiet: bool = False) -> None:
    """Serve a student over HTTP: POST /recommend {"history": [...], "k": 10, "by": "item_id"}.
    ``model``: a model.pt (or exported .pt2); ``data``: its dataset folder (default: the
    folder of the dataset the model records); ``host``: 127.0.0.1 (this machine only) unless given; ``quiet``:
    no line per request. Stops with Ctrl-C."""
    import torch

    from dllm2rec.recommend import Recommender

    if threads:
        torch.set_num_threads(int(threads))
    recommender = Recommender.load(model, data, device)
    try:
        server = make_server(recommender, host, int(port), quiet)
    except OSError as err:
        raise UserError(f"cannot listen on {host}:{port} ({err.strerror}); pick another --port") from None
    bound = server.server_address
    print(f"serving {model} ({recommender.meta.get('backbone')}, {recommender.meta.get('method')}) on "
          f"http://{bound[0]}:{bound[1]}/recommend; Ctrl-C stops", file=sys.stderr, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)
    finally:
        server.server_close()
