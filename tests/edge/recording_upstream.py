"""A stand-in for the cloud's nova-api (a test fixture's subprocess):

    python tests/edge/recording_upstream.py PORT RECORD_FILE [CELL_DB]

Every request is appended to RECORD_FILE as one JSON line (method, path, headers, body).
Answers: paths containing ``/hang`` never answer; ``/stream`` sends one chunk, waits
for the file ``RECORD_FILE.go`` to exist, then sends the rest (chunked; ending in
``-sized``: with a Content-Length); ``/cut`` sends a head and no body; ``/stall/N`` a
head and N bytes of its body, then nothing while the connection stays open; anything else
gets 202 for a write and 200 for a read, with a JSON body that echoes the request and
headers a client would look at. With CELL_DB, ``POST /v2.1/servers/{id}/action`` with
``os-stop`` / ``os-start`` changes the server in that cell database before answering,
as nova-api does."""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _any(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        record = {"method": self.command, "path": self.path,
                  "headers": {k.lower(): v for k, v in self.headers.items()},
                  "body": body.decode("utf-8", "replace")}
        with open(self.server.record, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.server.cell_db and self.command == "POST" and self.path.endswith("/action"):
            self._act(self.path.split("/")[-2], json.loads(body or b"{}"))
        if "/hang" in self.path:
            time.sleep(3600)
            return
        if "/stream" in self.path:
            first, second = b'{"first": "part",', b' "second": "part"}'
            sized = self.path.endswith("-sized")
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            if sized:
                self.send_header("Content-Length", str(len(first) + len(second)))
            else:
                self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(first) if sized else self._chunk(first)
            self.wfile.flush()
            while not os.path.exists(self.server.record + ".go"):
                time.sleep(0.01)
            self.wfile.write(second) if sized else self._chunk(second)
            if not sized:
                self.wfile.write(b"0\r\n\r\n")
            return
        if "/stall" in self.path:   # a head, then ``/stall/N``: N bytes of body, then nothing
            sent = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.write(b"x" * sent)
            self.wfile.flush()
            time.sleep(3600)
            return
        if "/cut" in self.path:     # a head promising more body than ever comes
            self.send_response(200)
            self.send_header("Content-Length", "100")
            self.end_headers()
            self.wfile.flush()
            self.close_connection = True
            return
        answer = json.dumps({"upstream": True, "method": self.command, "path": self.path,
                             "body": record["body"]}).encode()
        self.send_response(202 if self.command in ("POST", "PUT", "DELETE") else 200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.send_header("x-openstack-request-id", "req-upstream-1")
        self.send_header("Location", "http://upstream.example/v2.1/servers/new-id")
        self.send_header("X-Upstream-Only", "yes")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(answer)

    def _act(self, uuid: str, action: dict) -> None:
        from replica.cell import rows
        from replica.cell.connection import open_cell
        if "os-stop" in action:
            state, power = "stopped", rows.SHUTDOWN
        elif "os-start" in action:
            state, power = "active", rows.RUNNING
        else:
            return
        conn = open_cell(self.server.cell_db)
        try:
            with conn:
                conn.execute("UPDATE instances SET vm_state = ?, power_state = ?, "
                             "task_state = NULL, updated_at = ? WHERE uuid = ?",
                             (state, power, rows.now(), uuid))
        finally:
            conn.close()

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        self.wfile.flush()

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = _any

    def log_message(self, *args):
        pass


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler)
    server.daemon_threads = True
    server.record = sys.argv[2]
    server.cell_db = sys.argv[3] if len(sys.argv) > 3 else None
    server.serve_forever()


if __name__ == "__main__":
    main()
