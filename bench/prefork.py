"""A small pre-fork gevent WSGI server for the baselines, built like the appliance's
workers: N forked processes, each with its own SO_REUSEPORT listening socket (the kernel
balances connections), TCP_NODELAY on every connection (gevent writes headers and body
separately; Nagle would hold the body ~40 ms), and PR_SET_PDEATHSIG so no worker
outlives its parent. The WSGI app is built in each child, after the fork, so nothing that
holds an OS resource (a database connection, the gevent hub) crosses it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import sys

LISTEN_BACKLOG = 1024
PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _listener(host: str, port: int):
    from gevent import socket as gsocket  # cooperative accept; created after the fork

    sock = gsocket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(LISTEN_BACKLOG)
    return sock


def _serve_child(make_app, host: str, port: int) -> None:
    _die_with_parent()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import gevent
    from gevent import pywsgi

    gevent.reinit()

    class NoDelayServer(pywsgi.WSGIServer):
        def handle(self, sock, address):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return super().handle(sock, address)

    app = make_app()
    NoDelayServer(_listener(host, port), app, log=None, error_log=sys.stderr).serve_forever()


def serve(make_app, host: str, port: int, workers: int) -> None:
    """Fork ``workers`` servers of ``make_app()`` on host:port; return when told to stop."""
    children = []
    for _ in range(workers):
        pid = os.fork()
        if pid == 0:
            try:
                _serve_child(make_app, host, port)
            finally:
                os._exit(1)
        children.append(pid)

    def stop(signum, _frame):
        for child in children:
            try:
                os.kill(child, signal.SIGTERM)
            except ProcessLookupError:
                pass

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for child in children:
        while True:
            try:
                os.waitpid(child, 0)
                break
            except ChildProcessError:
                break
            except InterruptedError:
                continue
