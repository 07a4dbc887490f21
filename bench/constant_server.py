"""Baseline 1, the physical limit of the stack: the same gevent WSGI server, workers and
sockets as the appliance, answering constant bodies of the same size as the appliance's
answers. No routing, no database: what is left is the server itself.

    python -m bench.constant_server --port P --workers N --bodies bodies.json

``bodies.json`` maps a request path (with its query) to the body to answer; any other path
gets the body mapped to "*" (the show body, for many random ids).
"""

from __future__ import annotations

import argparse
import json

from bench import prefork


def make_app(bodies: dict[str, bytes]):
    default = bodies.get("*", b"{}")

    def app(environ, start_response):
        path = environ.get("PATH_INFO", "")
        query = environ.get("QUERY_STRING", "")
        body = bodies.get(f"{path}?{query}" if query else path, default)
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(body)))])
        return [body]

    return app


def load_bodies(path: str) -> dict[str, bytes]:
    with open(path) as f:
        return {key: value.encode() for key, value in json.load(f).items()}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--bodies", required=True, help="JSON file: path -> body text")
    args = parser.parse_args(argv)
    bodies = load_bodies(args.bodies)
    prefork.serve(lambda: make_app(bodies), args.host, args.port, args.workers)


if __name__ == "__main__":
    main()
