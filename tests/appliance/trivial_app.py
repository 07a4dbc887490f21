"""A supervisor serving a trivial WSGI app: lets the process model be tested on its own.

Run as ``python -m tests.appliance.trivial_app`` with APPLIANCE_* settings in the
environment. ``/slow?s=N`` sleeps N seconds (cooperatively) before answering;
every answer is the worker's pid; TEST_BOOT_FAIL=1 (or a file fail-boot in the data dir,
seen at each worker's boot) makes boot fail.
"""

from __future__ import annotations

import os
import sys
from urllib.parse import parse_qs

import gevent

from appliance import logs
from appliance.settings import load
from appliance.supervisor import StartError, Supervisor


def trivial_app(settings):
    if os.environ.get("TEST_BOOT_FAIL") or os.path.exists(
            os.path.join(settings.data_dir, "fail-boot")):
        raise RuntimeError("boot failure requested by the test")

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "/")
        if path == "/slow":
            # Mark the request as in flight, so a test can wait for it, then dawdle.
            marker = os.path.join(settings.data_dir, f"inflight-{os.getpid()}-{id(environ)}")
            open(marker, "w").close()
            seconds = float(parse_qs(environ.get("QUERY_STRING", "")).get("s", ["1"])[0])
            gevent.sleep(seconds)
        body = f"{os.getpid()}\n".encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app


def main() -> int:
    settings = load(None)
    logs.configure(settings.log_level, settings.log_format)
    with_admin = os.environ.get("TEST_WITH_ADMIN") == "1"
    supervisor = Supervisor(settings, app_factory=trivial_app, ingest=False, admin=with_admin,
                            prepare_replica=False)
    try:
        return supervisor.run()
    except StartError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
