"""Read-your-writes: the position a passed-through write leaves, and waiting for it.

After a write the upstream accepted, each feed's publisher is asked for its head (the
``hello`` of its control socket, all feeds at once, within ``HEADS_TIMEOUT``): the change
the write made is at or below those heads. The answer carries them in
``X-Replica-Write-Position: cell1@<epoch>:<seq>,flavors@<epoch>:<seq>``. A read that sends
the same value back in ``X-Replica-Min-Position`` waits (polling the replica's positions
on the event loop) until every listed feed has applied its seq, or the bound passed, then
answers with what it has and says which in ``X-Replica-Position-Reached: true|false``.
A feed whose epoch differs from the replica's cannot be compared: it counts as not
reached, without waiting for it.
"""

from __future__ import annotations

import re
import time

import gevent

HEADS_TIMEOUT = 1.0             # seconds for the publishers' hellos after a write
POLL_FIRST = 0.001              # seconds between polls of the replica, doubling ...
POLL_MAX = 0.02                 # ... up to this
MAX_FEEDS = 64
_ITEM = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_.-]{0,63})@([A-Za-z0-9_.-]{1,64}):(\d{1,18})$")


def format_position(heads: dict[str, tuple[str, int]]) -> str:
    return ",".join(f"{cell}@{epoch}:{seq}" for cell, (epoch, seq) in sorted(heads.items()))


def parse_position(text: str) -> dict[str, tuple[str, int]] | None:
    """The feeds of a position header; None if it is not one."""
    items = text.split(",")
    if not text or len(items) > MAX_FEEDS:
        return None
    wanted = {}
    for item in items:
        match = _ITEM.match(item.strip())
        if match is None:
            return None
        wanted[match.group(1)] = (match.group(2), int(match.group(3)))
    return wanted


def reached(wanted: dict[str, tuple[str, int]],
            applied: dict[str, tuple[str, int]]) -> tuple[bool, bool]:
    """``(reached, worth waiting)``."""
    waiting = False
    for cell, (epoch, seq) in wanted.items():
        have = applied.get(cell)
        if have is None:
            waiting = True
        elif have[0] != epoch:
            return False, False
        elif have[1] < seq:
            waiting = True
    return not waiting, waiting


def wait_for(wanted: dict[str, tuple[str, int]], positions, bound: float) -> bool:
    """Poll ``positions()`` until ``wanted`` is applied or ``bound`` seconds passed."""
    deadline = time.monotonic() + bound
    pause = POLL_FIRST
    while True:
        done, worth = reached(wanted, positions())
        if done or not worth:
            return done
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        gevent.sleep(min(pause, left))
        pause = min(pause * 2, POLL_MAX)


class FeedHeads:
    """Asks every feed's publisher for its head (control socket ``hello``)."""

    def __init__(self, feeds: tuple[tuple, ...], timeout: float = HEADS_TIMEOUT):
        self.feeds = feeds               # (name, control URL[, key file])
        self.timeout = timeout
        self._requesters = None

    def _clients(self):
        if self._requesters is None:     # made in the worker, after the fork
            from replica.ingest_control import Requester
            from replica.key_file import KeyFileError, sealer_for
            self._requesters = {}
            for name, url, *key_file in self.feeds:
                try:
                    sealer = sealer_for(name, key_file[0] if key_file else None)
                except KeyFileError as exc:  # serve checked it at start; unusable now: left out
                    from appliance import logs
                    logs.error("feed_key_file_unusable", cell=name, detail=str(exc))
                    continue
                self._requesters[name] = Requester(url, self.timeout, sealer=sealer)
        return self._requesters

    def heads(self) -> dict[str, tuple[str, int]]:
        """Each answering feed's ``(epoch, head seq)``; feeds that do not answer in time
        are left out (a read then does not wait for them)."""
        clients = self._clients()

        def hello(name):
            try:
                reply = clients[name].request("hello", timeout=self.timeout)
                return name, (str(reply["epoch"]), int(reply["head"]))
            except Exception:  # a feed away now: the position just leaves it out
                return name, None

        jobs = [gevent.spawn(hello, name) for name in clients]
        gevent.joinall(jobs, timeout=self.timeout + 0.5)
        return {name: value for name, value in (j.value or (None, None) for j in jobs)
                if name is not None and value is not None}
