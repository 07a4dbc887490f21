"""A lossy forwarder between a publisher's feed and ingest, for tests and the soak run:
it SUBs the publisher and re-PUBs every message on its own URL, dropping a share of them
(``drop`` may be changed while it runs) and sending extra messages on request
(``inject``)."""

from __future__ import annotations


class Relay:
    """A lossy forwarder: SUBs a publisher's feed and re-PUBs every message on another
    URL, dropping a share of them; ``inject`` sends extra messages on the relay."""

    def __init__(self, source_url: str, url: str, drop: float = 0.0, seed: int = 7):
        import random
        import threading

        import nanomsg
        self.url = url
        self.drop = drop
        self.random = random.Random(seed)
        self.forwarded = self.dropped = 0
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.sub = nanomsg.Socket(nanomsg.SUB)
        self.sub.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVBUF, 4 * 1024 * 1024)
        self.sub.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVMAXSIZE, -1)
        self.sub.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, 100)
        self.sub.set_string_option(nanomsg.SUB, nanomsg.SUB_SUBSCRIBE, b"")
        self.sub.connect(source_url)
        self.pub = nanomsg.Socket(nanomsg.PUB)
        self.pub.set_int_option(nanomsg.SOL_SOCKET, nanomsg.SNDBUF, 4 * 1024 * 1024)
        self.pub.bind(url)
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import nanomsg
        while not self._stop.is_set():
            try:
                data = self.sub.recv()
            except nanomsg.NanoMsgAPIError:
                continue  # timeout: look at the stop flag
            if self.drop and self.random.random() < self.drop:
                self.dropped += 1
                continue
            self.forwarded += 1
            with self._lock:
                self.pub.send(data)

    def inject(self, data: bytes) -> None:
        with self._lock:
            self.pub.send(data)

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sub.close()
        self.pub.close()
