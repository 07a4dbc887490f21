"""The cell source seam: what the publisher and the control server need from "a
database whose changes we publish", whatever keeps it.

A source is two parts, paired with the cell's name and the kinds it publishes:

- a ``ChangeLog``: the gapless, numbered list of changed entity keys (the feed's
  epoch and seqs);
- an ``EntityReader``: entities built from the source's current state, inside a
  read view.

The feed contract (epoch, gapless seq, replay from a seq, snapshot at a seq, digests,
fetch) is the same whatever the source is: the appliance never knows which one a
cell has. Implementations: ``sqlite_source`` (the outbox table that triggers fill, in
the cell database itself); a MariaDB/MySQL source (a journal of its own fed from the
binlog) implements the same interfaces.

**Consistency rule** (why snapshots and events stay correct without locks): a read
that must be labelled with a seq (a snapshot, a digest, a replay, a fetch) reads the
change log FIRST and only then reads entities. ``EntityReader.read_view()`` fixes the
state it shows at the first entity read inside it, not at entry, so change log reads
made inside the block before any entity read come first, as required. Events are
built from the state read AFTER their keys were in the change log. Then every change
committed before the view's state is either in that state or carried by an event
with a seq above the label (built later, so newer), and applying those events after
the snapshot converges. (The SQLite outbox shares one transaction between the two
parts, which is stricter.)
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Callable, ContextManager, Iterator, Protocol

Cursor = tuple[str, str]            # (kind, key) of the last entity of a snapshot page


class ChangeLog(Protocol):
    """The gapless, numbered list of changed entity keys of one epoch.

    Seqs start at 1, increase by exactly one per change, are never reused within an
    epoch, and are assigned in commit order: a reader never sees seq N+1 before N.
    A source that cannot keep that (a rebuilt database, lost history) starts a new
    epoch. Methods may raise the source's ``errors`` (the caller retries later)."""

    #: the most changes one ``prune`` call removes
    prune_chunk: int

    def epoch(self) -> str:
        """The epoch as the source says it now (a random id, fixed per history)."""

    def head(self) -> int:
        """The last committed seq (0 when none yet). Never goes back within an epoch."""

    def oldest(self) -> int:
        """The oldest seq still retained (``head() + 1`` when none is): replay from a
        seq below it is impossible and the requester must resync."""

    def events_after(self, seq: int, limit: int) -> list[tuple[int, str, str]]:
        """``(seq, kind, key)`` with seq > ``seq``, in seq order, at most ``limit``."""

    def last_changed(self, kind: str, keys: list[str]) -> dict[str, int]:
        """For each of ``keys`` still in the retained log, the seq of its latest
        change (keys changed only before ``oldest()`` are absent)."""

    def prune(self, keep_events: int, keep_seconds: float) -> int:
        """Drop the oldest changes beyond retention (a change is kept while it is both
        among the newest ``keep_events`` and younger than ``keep_seconds``); what
        remains is a gapless range ending at the head. Returns how many went; a call
        removes at most ``prune_chunk`` (call again while it returns that many)."""

    def close(self) -> None: ...


class EntityReader(Protocol):
    """Entities built from the source's current state.

    Inside ``read_view()`` every read sees one consistent state, fixed at the first
    entity read in the block (see the consistency rule above); outside a view each
    call sees some committed state. Methods may raise the source's ``errors``."""

    def read_view(self) -> ContextManager[None]:
        """A consistent read; nothing is written."""

    def build(self, kind: str, keys: list[str]) -> dict[str, dict | None]:
        """The entity of each key, or None when it is gone (a tombstone)."""

    def count(self, kinds: list[str]) -> int:
        """How many entities of ``kinds`` exist."""

    def page_entities(self, kinds: list[str], after: Cursor | None, limit: int,
                      ) -> tuple[list[tuple[str, str, dict]], Cursor | None]:
        """Up to ``limit`` (kind, key, entity) after the cursor in (kind, key) order,
        and the cursor of the next page (None after the last page)."""

    def iter_entities(self, kinds: list[str], page: int = 500,
                      ) -> Iterator[tuple[str, str, dict]]:
        """Every entity of ``kinds``, in (kind, key) order."""

    def kinds(self) -> list[str]:
        """The kinds this source publishes, in snapshot order (sorted)."""

    def close(self) -> None: ...


@dataclass
class HeldView:
    """A read view kept open across requests (a paged snapshot), labelled with the
    change log's head read before its state was fixed (the state is fixed by now:
    ``total`` was counted in it)."""
    seq: int
    epoch: str
    total: int
    entities: EntityReader
    release: Callable[[], None]

    def close(self) -> None:
        self.release()


class CellSource(ABC):
    """One cell's source: a change log and an entity reader, with the cell's name
    and the kinds it publishes. Opened in the process and thread that use it (see
    ``SourceOpener``); a publisher, its control server and its pruner each open
    their own."""

    #: the exception types that mean "cannot read the source now, try again"
    errors: tuple[type[BaseException], ...] = ()

    def __init__(self, name: str, changelog: ChangeLog, entities: EntityReader):
        self.name = name
        self.changelog = changelog
        self.entities = entities

    @property
    def kinds(self) -> list[str]:
        return self.entities.kinds()

    @abstractmethod
    def open_snapshot(self) -> HeldView:
        """A new read view of its own, held until ``close()``: the head read first,
        then the state fixed (the consistency rule), its entities counted."""

    def close(self) -> None:
        self.entities.close()
        self.changelog.close()

    # -- what the publisher asks of the source it tails. The defaults suit a source
    # -- without a file of its own to watch: poll, and nothing is ever replaced.

    @property
    def ready(self) -> bool:
        """Whether the source is open (False after a failed ``reopen``, until one
        succeeds): the publisher neither publishes nor sends heartbeats meanwhile."""
        return True

    def wait(self, timeout: float) -> None:
        """Sleep up to ``timeout`` seconds, less when a change may have come."""
        time.sleep(max(0.0, min(timeout, 0.05)))

    def tick(self, look_now: bool) -> None:
        """Enqueue changes that no table of the cell records (the API database's, a
        host's liveness, Neutron's security groups) into the change log; called on
        every turn of the publisher's loop (``look_now``: the slow poll is due)."""

    def has_news(self) -> bool:
        """Whether the change log may have grown since the last call (a hint)."""
        return True

    def changed_identity(self, published: int, look_now: bool) -> str | None:
        """Why the source must be opened again (another database behind the same
        name, an epoch changed under the publisher, a log behind ``published``, the
        last seq this publisher sent), or None. ``look_now``: the slow poll is due."""
        return None

    def reopen(self, published: int) -> None:
        """Let go of what is open and open the source again; raises when it cannot
        yet (the publisher tries again). A log behind ``published`` under the same
        epoch gets a new epoch (its seqs would be reused for other changes)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be opened again")

    def before_fork(self) -> None:
        """Close what must not be carried into a forked child (the publisher forks its
        control server): a SQLite connection open across a fork, even one the child
        never uses, shares its lock state with the child's own connections to the same
        file. ``after_fork`` opens it again."""

    def after_fork(self) -> None:
        """Open again what ``before_fork`` closed."""

    def record_published(self, seq: int) -> None:
        """Keep ``(epoch, seq)``, the last seq published, across restarts (called at
        each heartbeat and at exit)."""


class SourceOpener(Protocol):
    """Opens a cell's source: ``publishing=True`` for the publisher's own (it tails
    it, watches it, records what it published); otherwise for a control server or a
    pruner. Called after a fork, in the process that uses the source."""

    def __call__(self, publishing: bool = False) -> CellSource: ...


def opener_of(where) -> SourceOpener:
    """An opener for ``where``: an opener as it is, or a SQLite cell database path."""
    if isinstance(where, str):
        from replica.cell.sqlite_source import SqliteOpener   # the path form is SQLite's
        return SqliteOpener(where)
    return where
