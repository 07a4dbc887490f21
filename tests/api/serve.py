"""Serve the Compute API app on a port (a test fixture's subprocess):

    python tests/api/serve.py REPLICA PORT [tokens_file]

One gevent WSGIServer with TCP_NODELAY on every connection, like a worker."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from gevent.pywsgi import WSGIServer  # noqa: E402

from appliance.api import ApiConfig, make_app  # noqa: E402


class NoDelayServer(WSGIServer):
    def handle(self, client_socket, address):
        client_socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return super().handle(client_socket, address)


def main() -> None:
    replica, port = sys.argv[1], int(sys.argv[2])
    tokens = sys.argv[3] if len(sys.argv) > 3 else None
    config = ApiConfig(replica_path=replica, auth="tokens" if tokens else "noauth",
                       tokens_file=tokens, max_limit=int(os.environ.get("MAX_LIMIT", "1000")),
                       noauth_default_token=os.environ.get("NOAUTH_DEFAULT", "admin:demo"),
                       public_url=os.environ.get("PUBLIC_URL") or None,
                       default_availability_zone=os.environ.get("DEFAULT_AVAILABILITY_ZONE",
                                                                "nova"))
    from replica.store.reader import set_nova_collation
    set_nova_collation(os.environ.get("NOVA_DATABASE_COLLATION", "binary"))
    app = make_app(config)
    signal.signal(signal.SIGHUP, lambda *_: app.reload())
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(128)
    NoDelayServer(listener, app, log=None).serve_forever()


if __name__ == "__main__":
    main()
