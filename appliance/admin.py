"""The admin listener: status page, status, resync, verify, jobs, metrics, health and
readiness.

Its own child process ("appliance: admin"), gevent + bottle, loopback by default. Off
loopback (or with ``admin_token_always``) every request needs ``admin_token`` as
``X-Auth-Token``, ``Authorization: Bearer`` or, for a browser, as the password of HTTP
Basic authentication (a 401 asks the browser for it). Every answer is JSON (metrics:
Prometheus text; ``/``: the status page, files of ``appliance/static``); errors are
``{"error": {"code": int, "message": str}}``, never a traceback. A POST whose ``Origin``
is another site is refused (a page elsewhere cannot start jobs through a browser).

The functions the handlers call (``collect_status``, ``readiness``, ``start_resync``,
``start_verify``, ``get_job``) are the same the command line reaches through
``AdminClient``: the CLI only parses and prints.
"""

from __future__ import annotations

import base64
import collections
import hmac
import json
import os
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request

import bottle

from appliance import logs, metrics
from appliance.settings import Settings, is_loopback
from appliance.supervisor import read_table

INGEST_TIMEOUT = 3.0            # seconds an admin request waits for ingest
CLIENT_TIMEOUT = 10.0
JSON_TYPE = "application/json"
LAG_SAMPLE_S = 2.0              # how often the listener records each cell's lag
LAG_HISTORY_S = 300.0           # how far back the status page's lag charts go
STATIC_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "static")
# The status page's files (appliance/static; in the one-file binary through
# pyinstaller.spec's datas) and their types.
STATIC_FILES = {"status.html": "text/html; charset=utf-8",
                "status.js": "text/javascript; charset=utf-8",
                "status.css": "text/css; charset=utf-8"}
PAGE_HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
                "X-Content-Type-Options": "nosniff",
                "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                                           "frame-ancestors 'none'"}


class AdminError(Exception):
    """An answer other than success: HTTP status and a message for people."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


# ---------------------------------------------------------------------------
# What the handlers do (and what the CLI's answers are made of)
# ---------------------------------------------------------------------------

def _ingest_client(settings: Settings):
    from replica.ingest_control import IngestClient
    return IngestClient(settings.ingest_control_url, timeout=INGEST_TIMEOUT)


def _ingest_call(settings: Settings, call):
    from replica.feed import ControlError
    from replica.ingest_control import ControlTimeout
    url = settings.ingest_control_url
    if url.startswith("ipc://") and not os.path.exists(url[len("ipc://"):]):
        raise AdminError(503, "the ingest process does not answer (its control socket "
                              "does not exist yet)")
    client = _ingest_client(settings)
    try:
        return call(client)
    except ControlTimeout:
        raise AdminError(503, "the ingest process does not answer (starting, or down)") \
            from None
    except ControlError as exc:
        status = 404 if ("unknown" in exc.error or "not_found" in exc.error) else 409 \
            if ("busy" in exc.error or "running" in exc.error) else 400
        raise AdminError(status, str(exc)) from None
    finally:
        client.close()


def collect_status(settings: Settings, processes_path: str) -> dict:
    """Per cell (from ingest) and per process (from the supervisor's table)."""
    table = read_table(processes_path) or {}
    result = {"cells": [], "ingest": None, "ingest_error": None,
              "supervisor": table.get("supervisor"), "processes": table.get("processes", []),
              "generated_at": time.time()}
    try:
        status = _ingest_call(settings, lambda c: c.status())
    except AdminError as exc:
        result["ingest_error"] = exc.message
        return result
    result["cells"] = status.get("cells", [])
    deleted = _deleted_servers(settings)
    for cell in result["cells"]:
        # ingest counts every row of the cell; soft-deleted servers are kept (Nova shows
        # them to changes-since) and are told apart here.
        if deleted is not None and cell.get("servers") is not None:
            cell["servers_deleted"] = deleted.get(cell.get("cell"), 0)
            cell["servers_live"] = max(cell["servers"] - cell["servers_deleted"], 0)
    result["ingest"] = {k: status.get(k) for k in
                        ("pid", "events_applied", "batches_committed", "dead_letters",
                         "wal_bytes", "wal_backlog_bytes", "store_failing_since",
                         "store_error", "disk_full")}
    return result


def _deleted_servers(settings: Settings) -> dict[str, int] | None:
    """Soft-deleted servers per cell from this process's read-only replica connection
    (None when the replica cannot be read yet)."""
    import apsw

    from replica.store.reader import ReadTimeout, reader_for
    if not os.path.exists(settings.replica):
        return None
    try:
        return reader_for(settings.replica).deleted_servers()
    except (apsw.Error, ReadTimeout) as exc:
        logs.warning("deleted_count_failed", error=repr(exc))
        return None


def readiness(status: dict, max_lag_ms: float, configured: tuple[str, ...]) -> list[str]:
    """Reasons the appliance is not ready; empty when it is."""
    if status.get("ingest_error"):
        return [status["ingest_error"]]
    reasons = []
    cells = {c.get("cell"): c for c in status.get("cells", [])}
    for name in configured:
        cell = cells.get(name)
        if cell is None:
            reasons.append(f"cell {name}: not reported by ingest yet")
        elif not cell.get("live_once"):
            reasons.append(f"cell {name}: never live yet (state {cell.get('state')})")
        elif cell.get("lag_ms") is not None and cell["lag_ms"] > max_lag_ms:
            reasons.append(f"cell {name}: lag {cell['lag_ms']:.0f} ms over "
                           f"{max_lag_ms:.0f} ms")
    return reasons


def start_resync(settings: Settings, cell: str | None) -> dict:
    return _ingest_call(settings, lambda c: c.job(c.resync(cell)))


def start_verify(settings: Settings, cell: str | None, repair: bool) -> dict:
    return _ingest_call(settings, lambda c: c.job(c.verify(cell, repair)))


def get_job(settings: Settings, job_id: str) -> dict:
    return _ingest_call(settings, lambda c: c.job(job_id))


# ---------------------------------------------------------------------------
# The HTTP app
# ---------------------------------------------------------------------------

def token_required(settings: Settings) -> bool:
    return bool(settings.admin_token) and (settings.admin_token_always
                                           or not is_loopback(settings.admin_host))


def _presented_token() -> bytes:
    # The header's bytes as they came (WSGI hands them over as latin-1): bottle's
    # get_header decodes them as UTF-8 and raises on anything else.
    environ = bottle.request.environ
    token = environ.get("HTTP_X_AUTH_TOKEN", "")
    if not token:
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        elif auth[:6].lower() == "basic ":
            # A browser: any user name, the token as the password (its bytes as sent).
            try:
                token = base64.b64decode(auth[6:].strip()).decode("latin-1").partition(":")[2]
            except ValueError:
                token = ""
    return token.encode("latin-1", "replace")


def _cross_origin() -> bool:
    """A browser's request sent by a page of another site (Origin names another host)."""
    origin = bottle.request.get_header("Origin")
    if not origin:
        return False
    host = bottle.request.get_header("Host", "")
    return origin.split("://", 1)[-1].rstrip("/") != host


class LagHistory:
    """Each cell's lag, sampled every LAG_SAMPLE_S for LAG_HISTORY_S (the status page's
    charts): ``{cell: deque of (unix time, lag seconds)}``."""

    def __init__(self, seconds: float = LAG_HISTORY_S, every: float = LAG_SAMPLE_S):
        self.every = every
        self.keep = max(2, int(seconds / every))
        self.cells: dict[str, collections.deque] = {}

    def record(self, cells: list[dict], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for cell in cells:
            lag = cell.get("lag_ms")
            if lag is None:
                continue
            points = self.cells.setdefault(str(cell.get("cell")),
                                           collections.deque(maxlen=self.keep))
            points.append((round(now, 3), round(lag / 1000.0, 3)))

    def as_dict(self) -> dict:
        return {"interval": self.every,
                "cells": {name: list(points) for name, points in self.cells.items()}}


def sample_lag(settings: Settings, history: LagHistory) -> None:
    """The listener's sampler greenlet: one ingest status every LAG_SAMPLE_S."""
    import gevent
    while True:
        try:
            status = _ingest_call(settings, lambda c: c.status())
            history.record(status.get("cells", []))
        except AdminError:
            pass  # ingest down or starting: a gap in the charts
        gevent.sleep(history.every)


def _static(name: str) -> bytes:
    """A file of the status page: beside this module (a source tree, an installed package,
    and PyInstaller's unpacked bundle, where the spec's datas put appliance/static), else
    through the package's resources."""
    try:
        with open(os.path.join(STATIC_DIR, name), "rb") as f:
            return f.read()
    except FileNotFoundError:
        from importlib import resources
        return resources.files("appliance").joinpath("static", name).read_bytes()


def _json(status: int, body: dict) -> bottle.HTTPResponse:
    return bottle.HTTPResponse(json.dumps(body, default=str) + "\n", status=status,
                               headers={"Content-Type": JSON_TYPE})


def _error(status: int, message: str) -> bottle.HTTPResponse:
    return _json(status, {"error": {"code": status, "message": message}})


def _flag(value: str | None) -> bool:
    if value is None:
        return False
    if value.lower() in ("1", "true", "yes", "on", ""):
        return True
    if value.lower() in ("0", "false", "no", "off"):
        return False
    raise AdminError(400, f"expected true or false, got {value!r}")


def make_app(settings: Settings, processes_path: str, metrics_dir: str,
             history: LagHistory | None = None) -> bottle.Bottle:
    app = bottle.Bottle(catchall=False)
    configured = tuple(c.name for c in settings.cells)
    need_token = token_required(settings)
    history = history or LagHistory()
    static = {name: _static(name) for name in STATIC_FILES}   # read once, at boot

    def guarded(handler):
        def wrapper(*args, **kwargs):
            if need_token and not hmac.compare_digest(_presented_token(),
                                                      settings.admin_token.encode()):
                refused = _error(401, "admin token required (X-Auth-Token, "
                                      "Authorization: Bearer, or as the password of HTTP "
                                      "Basic authentication)")
                refused.set_header("WWW-Authenticate",
                                   'Basic realm="appliance admin", charset="UTF-8"')
                return refused
            if bottle.request.method == "POST" and _cross_origin():
                return _error(403, "cross-origin request refused: start jobs from the "
                                   "status page of this listener or the command line")
            try:
                return handler(*args, **kwargs)
            except AdminError as exc:
                return _error(exc.status, exc.message)
            except Exception as exc:  # a bug answers 500 with a message, never a traceback
                logs.error("admin_error", path=bottle.request.path, error=repr(exc))
                return _error(500, f"internal error: {exc.__class__.__name__}")
        return wrapper

    def page(name: str) -> bottle.HTTPResponse:
        return bottle.HTTPResponse(static[name], status=200, headers={
            "Content-Type": STATIC_FILES[name], **PAGE_HEADERS})

    @app.get("/")
    @guarded
    def status_page():
        return page("status.html")

    @app.get("/static/<name>")
    @guarded
    def static_file(name):
        if name not in static:
            raise AdminError(404, f"no static file {name!r}")
        return page(name)

    @app.get("/lag-history")
    @guarded
    def lag_history():
        return _json(200, history.as_dict())

    @app.get("/healthz")
    @guarded
    def healthz():
        return _json(200, {"status": "ok"})

    @app.get("/readyz")
    @guarded
    def readyz():
        status = collect_status(settings, processes_path)
        reasons = readiness(status, settings.readyz_max_lag_ms, configured)
        if reasons:
            return _json(503, {"ready": False, "reasons": reasons})
        return _json(200, {"ready": True, "reasons": []})

    @app.get("/status")
    @guarded
    def status():
        return _json(200, collect_status(settings, processes_path))

    @app.post("/resync")
    @guarded
    def resync():
        cell = bottle.request.query.get("cell") or None
        return _json(202, {"job": start_resync(settings, cell)})

    @app.post("/verify")
    @guarded
    def verify():
        cell = bottle.request.query.get("cell") or None
        repair = _flag(bottle.request.query.get("repair"))
        return _json(202, {"job": start_verify(settings, cell, repair)})

    @app.get("/jobs/<job_id>")
    @guarded
    def job(job_id):
        return _json(200, {"job": get_job(settings, job_id)})

    @app.get("/metrics")
    @guarded
    def prometheus():
        status = collect_status(settings, processes_path)
        ingest = None
        if not status["ingest_error"]:
            ingest = dict(status["ingest"] or {}, cells=status["cells"])
        ready = not readiness(status, settings.readyz_max_lag_ms, configured)
        table = {"supervisor": status["supervisor"], "processes": status["processes"]}
        body = metrics.render(metrics_dir, ingest, table, ready)
        return bottle.HTTPResponse(body, status=200, headers={
            "Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    def not_found(error):
        bottle.response.content_type = JSON_TYPE
        return json.dumps({"error": {"code": error.status_code,
                                     "message": f"{bottle.request.method} "
                                                f"{bottle.request.path}: "
                                                f"{error.body or 'not found'}"}}) + "\n"

    for code in (404, 405, 500):
        app.error(code)(not_found)
    app.default_error_handler = lambda error: not_found(error)
    return app


def serve(settings: Settings, processes_path: str, metrics_dir: str) -> None:
    """The admin child's body: listen on the reserved admin address until SIGTERM."""
    import gevent
    import gevent.event
    import signal

    from appliance.worker import BootError, Handler, Server, reuseport_listener, tls_acceptor

    gevent.reinit()
    stop = gevent.event.Event()
    gevent.signal_handler(signal.SIGTERM, stop.set)
    gevent.signal_handler(signal.SIGQUIT, stop.set)
    try:
        host = socket.getaddrinfo(settings.admin_host, settings.admin_port,
                                  type=socket.SOCK_STREAM)[0][4][0]
        tls = tls_acceptor(settings, "admin")
        listener = reuseport_listener(host, settings.admin_port, backlog=128)
        history = LagHistory()
        app = make_app(settings, processes_path, metrics_dir, history)
    except Exception as exc:
        raise BootError(f"admin listener failed to boot: {exc!r}") from exc
    # The workers' server and handler: 414 / 431 with a lingering close, no traceback
    # for a client's bad request.
    server = Server(listener, app, handler_class=Handler, log=None, error_log=None,
                    tls=tls)
    server.start()
    sampler = gevent.spawn(sample_lag, settings, history)
    logs.info("admin_ready", listen=f"{host}:{settings.admin_port}",
              token_required=token_required(settings))
    stop.wait()
    sampler.kill()
    server.stop(timeout=2)


# ---------------------------------------------------------------------------
# The client the command line uses
# ---------------------------------------------------------------------------

class AdminClient:
    """HTTP client of the admin listener. Raises AdminError with the listener's message
    (or a connection problem) on anything but success."""

    def __init__(self, url: str, token: str | None = None, timeout: float = CLIENT_TIMEOUT,
                 cafile: str | None = None):
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.context = None
        if cafile and self.url.startswith("https:"):
            # The listener's own certificate (self-signed, or with its chain) is trusted
            # besides the system's authorities.
            self.context = ssl.create_default_context()
            self.context.load_verify_locations(cafile)

    def _request(self, method: str, path: str, query: dict | None = None) -> dict:
        query = {k: v for k, v in (query or {}).items() if v is not None}
        url = self.url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, method=method, data=b"" if method == "POST"
                                         else None)
        if self.token:
            request.add_header("X-Auth-Token", self.token)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout,
                                        context=self.context) as response:
                return json.loads(response.read() or b"{}")
        except urllib.error.HTTPError as exc:
            try:
                body = json.loads(exc.read())
                message = body.get("error", {}).get("message") or json.dumps(body)
                if exc.code == 503 and "reasons" in body:
                    message = "; ".join(body["reasons"])
            except ValueError:
                message = exc.reason
            raise AdminError(exc.code, message) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise AdminError(0, f"cannot reach the admin listener at {self.url} "
                                f"({reason}); is the appliance running? (--admin-url)") \
                from None

    def status(self) -> dict:
        return self._request("GET", "/status")

    def resync(self, cell: str | None = None) -> dict:
        return self._request("POST", "/resync", {"cell": cell})["job"]

    def verify(self, cell: str | None = None, repair: bool = False) -> dict:
        return self._request("POST", "/verify",
                             {"cell": cell, "repair": "true" if repair else None})["job"]

    def job(self, job_id: str) -> dict:
        return self._request("GET", f"/jobs/{urllib.parse.quote(str(job_id))}")["job"]

    def ready(self) -> bool:
        try:
            self._request("GET", "/readyz")
            return True
        except AdminError:
            return False

    def wait_job(self, job_id: str, progress=None, interval: float = 0.2,
                 timeout: float = 3600.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if progress:
                progress(job)
            if job.get("state") != "running":
                return job
            if time.monotonic() > deadline:
                raise AdminError(0, f"job {job_id} still running after {timeout:.0f}s")
            time.sleep(interval)
