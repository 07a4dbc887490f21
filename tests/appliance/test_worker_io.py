"""The worker's own request-header reading and response sending, against gevent's.

``request_headers`` must give every request exactly the headers gevent's parser
(http.client over email's parser) gives it; ``send_pieces`` must send every byte of
every piece in order, also when the kernel takes only part of them at once.
"""

from __future__ import annotations

import http.client
import io
import socket
import threading

import gevent
import gevent.pywsgi
import gevent.socket
import pytest

from appliance.worker import request_headers, send_pieces

HEADER_BLOCKS = [
    b"Host: 127.0.0.1:8774\r\n\r\n",
    b"Host: h\r\nX-Auth-Token: admin:demo\r\nAccept: application/json\r\n\r\n",
    b"Host: h\nAccept: */*\n\n",                              # bare LF
    b"\r\n",                                                  # no header at all
    b"",                                                      # the client went away
    b"Host: h\r\nX-Empty:\r\nX-Spaces:   \t a b  \r\n\r\n",   # empty, padded values
    b"Host: h\r\nX-Trailing: value   \r\n\r\n",               # trailing spaces stay
    b"Host: h\r\nX-Folded: one\r\n  two\r\n\r\n",             # obsolete line folding
    b"Host: h\r\nNo colon here\r\nAccept: x\r\n\r\n",         # a line without a name
    b"Host: h\r\n: no name\r\n\r\n",
    b"From someone\r\nHost: h\r\n\r\n",
    b"Host: h\r\nX-CR: a\rb\r\n\r\n",                         # a stray CR
    b"Host: h\r\nX-CRCR: a\r\r\n\r\n",
    b"Host: h\r\nBad Name: x\r\n\r\n",                        # a space in the name
    b"Host: h\r\nX_Underscore: x\r\n\r\n",
    b"Host: h\r\nX-Latin: caf\xe9\r\n\r\n",                   # latin-1 bytes in a value
    b"Host: h\r\nX-Colons: a:b:c\r\n\r\n",
    b"Host: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabc",
    b"Host: h\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"Host: h\r\nX-Tab:\tvalue\r\n\r\n",
    b"Host: h\r\nX-Eof: unterminated",                        # the stream ends mid-line
]


def _gevent_way(fp):
    return gevent.pywsgi.headers_factory(fp)


def _fields(message) -> tuple:
    return (list(message._headers), list(message.headers), message.status,
            message.typeheader, message.getheader("content-length"),
            [type(defect).__name__ for defect in message.defects],
            message.get_payload())


@pytest.mark.parametrize("block", HEADER_BLOCKS)
def test_request_headers_are_gevents(block):
    mine, theirs = io.BytesIO(block), io.BytesIO(block)
    assert _fields(request_headers(mine)) == _fields(_gevent_way(theirs))
    assert mine.tell() == theirs.tell()     # both stop at the end of the header block


def test_request_headers_limits():
    with pytest.raises(http.client.LineTooLong):
        request_headers(io.BytesIO(b"X-Long: " + b"a" * 70000 + b"\r\n\r\n"))
    many = b"".join(b"X-%d: v\r\n" % i for i in range(101)) + b"\r\n"
    with pytest.raises(http.client.HTTPException):
        request_headers(io.BytesIO(many))


def test_request_headers_are_mutable_as_gevent_needs():
    # gevent deletes Content-Length when the body is chunked
    message = request_headers(io.BytesIO(
        b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n"))
    del message["content-length"]
    assert message.get("content-length") is None
    assert message.get("Transfer-Encoding") == "chunked"


def test_send_pieces_sends_everything_in_order():
    left, right = socket.socketpair()
    try:
        left.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)   # partial sends
        pieces = [b"head\r\n\r\n", b"", bytes(range(256)) * 4000, b"x" * 100_000, b"}"]
        expected = b"".join(pieces)
        received = bytearray()

        def read_all():
            while len(received) < len(expected):
                chunk = right.recv(65536)
                if not chunk:
                    break
                received.extend(chunk)

        reader = threading.Thread(target=read_all)
        reader.start()
        sock = gevent.socket.socket(fileno=left.detach())
        try:
            assert send_pieces(sock, pieces) == len(expected)
        finally:
            sock.close()
        reader.join(30)
        assert not reader.is_alive()
        assert bytes(received) == expected
    finally:
        right.close()


def test_a_kept_alive_connection_lets_the_others_have_their_turn():
    """A connection whose next requests are already waiting (pipelined here, as a fast
    client's are by the time an answer is sent) does not keep the worker: a request
    that arrived on another connection meanwhile is answered before the first
    connection's last one."""
    import gevent.monkey
    import gevent.pool

    from appliance.worker import Handler, Server, reuseport_listener

    # OS-level events, also when another test has patched threading: waiting on one
    # blocks the hub, so the other request surely arrives while the first is answered.
    os_event = gevent.monkey.get_original("threading", "Event")
    inside_first = os_event()
    other_sent = os_event()
    order = []

    def app(environ, start_response):
        order.append(environ["PATH_INFO"])
        if environ["PATH_INFO"] == "/a1":
            inside_first.set()
            assert other_sent.wait(10)    # the other request arrives meanwhile
        start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", "2")])
        return [b"ok"]

    listener = reuseport_listener("127.0.0.1", 0)
    server = Server(listener, application=app, spawn=gevent.pool.Pool(10),
                    handler_class=Handler, log=None, error_log=io.StringIO())
    server.start()
    port = listener.getsockname()[1]
    first = [f"/a{n}" for n in range(1, 6)]

    def read_answers(sock, count):
        data = b""
        while data.count(b"HTTP/1.1 200") < count or not data.endswith(b"ok"):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
        return data.count(b"HTTP/1.1 200")

    def clients():
        a = socket.create_connection(("127.0.0.1", port), timeout=10)
        b = socket.create_connection(("127.0.0.1", port), timeout=10)
        try:
            a.sendall(b"".join(f"GET {p} HTTP/1.1\r\nHost: h\r\n\r\n".encode()
                               for p in first))
            assert inside_first.wait(10)
            b.sendall(b"GET /b HTTP/1.1\r\nHost: h\r\n\r\n")
            other_sent.set()
            return read_answers(a, len(first)), read_answers(b, 1)
        finally:
            a.close()
            b.close()

    try:
        answered = gevent.get_hub().threadpool.spawn(clients).get(timeout=30)
    finally:
        server.stop(timeout=1)
    assert answered == (len(first), 1)
    assert sorted(order) == sorted(first + ["/b"])
    assert order.index("/b") < order.index("/a5"), order
