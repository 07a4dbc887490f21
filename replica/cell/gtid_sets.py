"""MySQL GTID sets as the journal keeps them (MariaDB's positions are in ``binlog.py``).

A MySQL server numbers its transactions ``<server_uuid>:<n>`` and describes what
it has executed as a GTID set: ``3e11fa47-71ca-11e1-9e33-c80aa9429562:1-100:105,
4f22...:1-5`` (per source uuid, closed intervals of transaction numbers). The
journal's position on MySQL is such a set (the transactions consumed), written in
one canonical form: uuids in lower case and sorted, intervals merged and sorted,
no spaces or line breaks (``@@gtid_executed`` has line breaks after its commas).
The auto-position request (COM_BINLOG_DUMP_GTID) sends this set; the server then
streams every transaction not in it.

Only the format is handled here and in the tailer (parsing, advancing by one
transaction, comparing with the server's ``@@gtid_executed``); it is tested
against text, not against a real MySQL server.
"""

from __future__ import annotations

import re

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

GtidSet = dict[str, list[tuple[int, int]]]      # uuid -> sorted, merged closed intervals


class GtidSetError(ValueError):
    pass


def is_gtid_set(text: str) -> bool:
    """Whether a position or GTID is MySQL's form (``uuid:...``), not MariaDB's."""
    return ":" in (text or "")


def _merged(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return out


def parse(text: str) -> GtidSet:
    """``"uuid:1-100:105,uuid2:1-5"`` (spaces and line breaks allowed) -> a GtidSet."""
    found: dict[str, list[tuple[int, int]]] = {}
    for part in filter(None, (p.strip() for p in (text or "").replace("\n", "").split(","))):
        uuid, *ranges = part.split(":")
        uuid = uuid.strip().lower()
        if not _UUID.fullmatch(uuid) or not ranges:
            raise GtidSetError(f"not a GTID set: {text!r}")
        for item in ranges:
            bounds = item.strip().split("-")
            if len(bounds) > 2 or not all(b.isdigit() for b in bounds):
                raise GtidSetError(f"not a GTID interval in {text!r}: {item!r}")
            start, end = int(bounds[0]), int(bounds[-1])
            if start < 1 or end < start:
                raise GtidSetError(f"not a GTID interval in {text!r}: {item!r}")
            found.setdefault(uuid, []).append((start, end))
    return {uuid: _merged(intervals) for uuid, intervals in found.items()}


def format_set(gtids: GtidSet) -> str:
    return ",".join(
        uuid + "".join(f":{a}" if a == b else f":{a}-{b}" for a, b in intervals)
        for uuid, intervals in sorted(gtids.items()) if intervals)


def canonical(text: str) -> str:
    return format_set(parse(text))


def add(text: str, gtid: str) -> str:
    """The set ``text`` with the transaction ``gtid`` (``uuid:n``) added."""
    gtids = parse(text)
    uuid, _, number = gtid.strip().lower().rpartition(":")
    if not _UUID.fullmatch(uuid) or not number.isdigit() or int(number) < 1:
        raise GtidSetError(f"not a MySQL GTID: {gtid!r}")
    n = int(number)
    gtids[uuid] = _merged(gtids.get(uuid, []) + [(n, n)])
    return format_set(gtids)


def contains(outer: str, inner: str) -> bool:
    """Whether every transaction of the set ``inner`` is in the set ``outer``."""
    have = parse(outer)
    for uuid, intervals in parse(inner).items():
        mine = have.get(uuid, [])
        for start, end in intervals:
            if not any(a <= start and end <= b for a, b in mine):
                return False
    return True
