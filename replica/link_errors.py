"""What went wrong on a cell's link, classed by what the caller does about it.

- ``Retry``: transient (no answer, an answer ingest cannot use now): back off, ask again.
- ``Replay``: a gap: ask the cell for the missing range.
- ``Resync``: the position is unusable (another epoch, beyond the retention): snapshot.
- ``GiveUp``: the cell and this build do not match (feed version, cell name): stop
  asking; the link's status shows the reason; asked again only now and then.

Each carries its reason (the operation that failed and how). ``classify`` maps what the
lower layers raise (control timeouts, control error replies, feed errors, socket
errors) onto these, in this one place; anything else is a bug and classifies as None.
"""

from __future__ import annotations

import nanomsg

from replica import feed
from replica.ingest_control import ControlTimeout


class LinkError(Exception):
    """A failure of a cell's link; ``reason`` says what failed."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class Retry(LinkError):
    """Transient: back off and ask again."""


class Replay(LinkError):
    """A gap: ask the cell for the missing range."""


class Resync(LinkError):
    """The position is unusable: only a snapshot brings the link back."""


class GiveUp(LinkError):
    """A configuration or protocol mismatch: retrying soon cannot help."""


def classify(exc: BaseException) -> LinkError | None:
    """``exc`` as a LinkError, or None for what no class covers (a bug, a database
    error): the caller logs that with its traceback."""
    if isinstance(exc, LinkError):
        return exc
    reason = str(exc) or type(exc).__name__
    # A control error reply is retried: the ops that can say "this position is unusable"
    # (replay's ``retention`` and ``epoch``) raise Resync themselves, and the same codes
    # elsewhere mean "ask again" (snapshot_begin while the cell is being reopened).
    if isinstance(exc, (ControlTimeout, feed.ControlError, feed.FeedError,
                        nanomsg.NanoMsgError)):
        return Retry(reason)
    return None
