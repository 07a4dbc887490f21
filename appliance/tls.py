"""TLS on the API and admin listeners (``tls_cert_file``, ``tls_key_file``).

A listener accepts plain TCP and wraps each connection itself (``TlsAcceptor.accept``):
it peeks at the first byte, and a client that speaks plain HTTP to the TLS port (the
first byte of a TLS handshake is 0x16) gets a short plain-HTTP 400 saying to use https,
then the connection is closed; no handshake error is logged for it. The handshake runs on
the event loop (a ``gevent.ssl`` context) under a deadline.

The files are read when the acceptor is made (each worker at its start, so a SIGHUP's
worker replacement picks up new files) and again when their modification time changes
(the admin listener is not replaced on SIGHUP). A new pair that fails to load keeps the
previous one, logged.
"""

from __future__ import annotations

import json
import os
import socket
import ssl

import gevent
import gevent.ssl

from appliance import logs

HANDSHAKE_TIMEOUT = 10.0        # seconds for the first byte and the handshake
TLS_HANDSHAKE_BYTE = b"\x16"
_PLAIN_BODY = json.dumps({"badRequest": {
    "code": 400, "message": "This port speaks HTTPS: send the request to https://"}}).encode()
PLAIN_HTTP_ANSWER = (b"HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\n"
                     b"Connection: close\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(_PLAIN_BODY), _PLAIN_BODY))


def server_context(cert_file: str, key_file: str) -> ssl.SSLContext:
    """A server-side context for the pair (raises OSError / ssl.SSLError if they do not
    load or do not match)."""
    context = gevent.ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert_file, key_file)
    return context


def _mtimes(*paths: str) -> tuple:
    stamps = []
    for path in paths:
        try:
            stamps.append(os.stat(path).st_mtime_ns)
        except OSError:
            stamps.append(None)
    return tuple(stamps)


class TlsAcceptor:
    def __init__(self, cert_file: str, key_file: str, what: str):
        self.cert_file = cert_file
        self.key_file = key_file
        self.what = what
        self._stamps = _mtimes(cert_file, key_file)
        self.context = server_context(cert_file, key_file)

    def _reload_if_changed(self) -> None:
        stamps = _mtimes(self.cert_file, self.key_file)
        if stamps == self._stamps:
            return
        self._stamps = stamps
        try:
            self.context = server_context(self.cert_file, self.key_file)
            logs.info("tls_reloaded", listener=self.what, cert=self.cert_file)
        except (OSError, ssl.SSLError) as exc:
            logs.error("tls_reload_failed", listener=self.what, cert=self.cert_file,
                       error=repr(exc), hint="the certificate loaded before stays in use")

    def accept(self, sock):
        """The TLS socket for an accepted connection, or None if it was not one (then
        it has been answered and closed)."""
        self._reload_if_changed()
        try:
            with gevent.Timeout(HANDSHAKE_TIMEOUT, TimeoutError("TLS handshake")):
                first = sock.recv(1, socket.MSG_PEEK)
                if first != TLS_HANDSHAKE_BYTE:
                    if first:
                        # Take the request off the socket first: closing one with
                        # unread bytes resets the connection before the answer is read.
                        sock.recv(65536)
                        sock.sendall(PLAIN_HTTP_ANSWER)
                        sock.shutdown(socket.SHUT_WR)
                    sock.close()
                    return None
                return self.context.wrap_socket(sock, server_side=True)
        except (OSError, ssl.SSLError, TimeoutError):
            sock.close()
            return None
