"""Reading only some columns of a binlog row event.

python-mysql-replication decodes every column of every row image (datetimes,
decimals, strings) when a row event's ``rows`` is read. The key mapping
(``binlog_keys.py``) needs one or two columns of the rows of most tables it
watches (an instance uuid, and a primary key for the commit wait): this module
reads those from the event's bytes and steps over the others by their sizes,
which the table map gives (the row image format of MySQL's and MariaDB's row
events: a null bitmap of the columns present, then each non-NULL value).

``column_images(event, names)`` returns ``[(before, after)]`` like the full
decoding, each image a dict of the wanted columns only (None for an image the
event has not: no before image in a write, no after image in a delete), or
None when it cannot: a column type it does not read or step over, a partial
JSON update, an event already decoded. The caller then reads ``event.rows``.
"""

from __future__ import annotations

import struct

from pymysqlreplication.constants import BINLOG, FIELD_TYPE
from pymysqlreplication.row_event import DeleteRowsEvent, UpdateRowsEvent, WriteRowsEvent

# Fixed sizes in a row image, by column type.
_FIXED = {
    FIELD_TYPE.TINY: 1, FIELD_TYPE.SHORT: 2, FIELD_TYPE.INT24: 3, FIELD_TYPE.LONG: 4,
    FIELD_TYPE.LONGLONG: 8, FIELD_TYPE.FLOAT: 4, FIELD_TYPE.DOUBLE: 8, FIELD_TYPE.YEAR: 1,
    FIELD_TYPE.DATE: 3, FIELD_TYPE.TIME: 3, FIELD_TYPE.TIMESTAMP: 4, FIELD_TYPE.DATETIME: 8,
}
# Sizes with fractional seconds: base + (fsp + 1) // 2.
_WITH_FSP = {FIELD_TYPE.DATETIME2: 5, FIELD_TYPE.TIMESTAMP2: 4, FIELD_TYPE.TIME2: 3}
# Values prefixed by their length in ``column.length_size`` bytes.
_PREFIXED = frozenset({FIELD_TYPE.BLOB, FIELD_TYPE.GEOMETRY, FIELD_TYPE.JSON})
_STRINGS = frozenset({FIELD_TYPE.VARCHAR, FIELD_TYPE.STRING})
_INTS = {  # type -> (signed format, unsigned format)
    FIELD_TYPE.TINY: ("<b", "<B"), FIELD_TYPE.SHORT: ("<h", "<H"),
    FIELD_TYPE.LONG: ("<i", "<I"), FIELD_TYPE.LONGLONG: ("<q", "<Q"),
}
_READABLE = frozenset(_INTS) | {FIELD_TYPE.INT24} | _STRINGS     # wanted columns' types
_DECIMAL_DIGITS = (0, 1, 1, 2, 2, 3, 3, 4, 4, 4)    # bytes of 0-9 leftover digits
_ROW_EVENT_TYPES = (WriteRowsEvent, UpdateRowsEvent, DeleteRowsEvent)


class Unreadable(Exception):
    """A column this module neither reads nor steps over."""


def _decimal_size(column) -> int:
    integral = column.precision - column.decimals
    return (integral // 9 * 4 + _DECIMAL_DIGITS[integral % 9]
            + column.decimals // 9 * 4 + _DECIMAL_DIGITS[column.decimals % 9])


def _layout(columns) -> list[tuple]:
    """Per column how to step over it: (0, its size) or (1, the size of its length
    prefix). Raises Unreadable."""
    out = []
    for column in columns:
        kind = column.type
        if kind in _FIXED:
            out.append((0, _FIXED[kind]))
        elif kind in _WITH_FSP:
            out.append((0, _WITH_FSP[kind] + (column.fsp + 1) // 2))
        elif kind in _STRINGS:
            out.append((1, 2 if column.max_length > 255 else 1))
        elif kind in _PREFIXED:
            out.append((1, column.length_size))
        elif kind == FIELD_TYPE.NEWDECIMAL:
            out.append((0, _decimal_size(column)))
        elif kind in (FIELD_TYPE.ENUM, FIELD_TYPE.SET):
            out.append((0, column.size))
        elif kind == FIELD_TYPE.BIT:
            out.append((0, column.bytes))
        else:
            raise Unreadable(f"column type {kind}")
    return out


def _value(column, data: bytes, start: int, end: int):
    """The value of a wanted column, as the full decoding makes it (ints, strings)."""
    kind = column.type
    if kind in _INTS:
        signed, unsigned = _INTS[kind]
        return struct.unpack_from(unsigned if column.unsigned else signed, data, start)[0]
    if kind == FIELD_TYPE.INT24:
        return int.from_bytes(data[start:end], "little", signed=not column.unsigned)
    if kind in _STRINGS:
        size = 2 if column.max_length > 255 else 1
        raw = data[start + size:end]
        encoding = _encoding(column)
        try:
            return raw.decode(encoding) if encoding else raw.decode()
        except LookupError:
            return raw
    raise Unreadable(f"wanted column of type {kind}")


_ENCODINGS: dict[str, str | None] = {}


def _encoding(column) -> str | None:
    name = column.character_set_name
    if name is None:
        return None
    if name not in _ENCODINGS:
        from pymysql.charset import charset_by_name
        charset = charset_by_name(name)
        _ENCODINGS[name] = charset.encoding if charset else name
    return _ENCODINGS[name]


# How to read an image, by the table's columns (python-mysql-replication keeps one
# column list per table id: the stream's ``freeze_schema``), the columns wanted and
# the image's columns-present bitmap: a plan per distinct case, not per event.
# Bounded: emptied when full.
_PLANS: dict[tuple, tuple] = {}
_PLANS_MAX = 512


def _present(bitmap: bytes, count: int) -> tuple[int, ...]:
    """The indexes of the columns a row image has (its columns-present bitmap)."""
    return tuple(i for i in range(count) if bitmap[i >> 3] & (1 << (i & 7)))


def _plan(columns, names: frozenset, bitmap: bytes) -> tuple | None:
    """(the wanted column names, the steps over an image with the present columns
    ``bitmap`` names), or None when a wanted column is missing or unreadable. A step:
    (null bit mask, prefixed, size, the name to read it as or None). Raises
    Unreadable."""
    key = (id(columns), names, bitmap)
    plan = _PLANS.get(key)
    if plan is not None and plan[0] is columns:
        return plan[1]
    wanted = {i: column.name for i, column in enumerate(columns) if column.name in names}
    if len(set(wanted.values())) != len(names) \
            or any(columns[i].type not in _READABLE for i in wanted):
        made = None                    # a column the table map does not name, or unread
    else:
        layout = _layout(columns)
        steps = tuple((1 << j, *layout[i], wanted.get(i), columns[i])
                      for j, i in enumerate(_present(bitmap, len(columns))))
        made = (tuple(wanted.values()), steps)
    if len(_PLANS) >= _PLANS_MAX:
        _PLANS.clear()
    _PLANS[key] = (columns, made)      # the columns kept: their id names them alone
    return made


def _image(plan: tuple, data: bytes, at: int) -> tuple[dict, int]:
    """One row image from ``at``: (the wanted columns' values, where the next begins)."""
    names, steps = plan
    size_of_nulls = (len(steps) + 7) // 8
    nulls = int.from_bytes(data[at:at + size_of_nulls], "little")
    at += size_of_nulls
    values = dict.fromkeys(names)                 # a column absent from the image: None
    for bit, prefixed, size, name, column in steps:
        if nulls & bit:
            continue                              # NULL: no bytes
        if not prefixed:
            end = at + size
        elif size == 1:
            end = at + 1 + data[at]
        else:
            end = at + size + int.from_bytes(data[at:at + size], "little")
        if name is not None:
            values[name] = _value(column, data, at, end)
        at = end
    if at > len(data):
        raise Unreadable("row image runs past the event")
    return values, at


def column_images(event, names) -> list[tuple[dict | None, dict | None]] | None:
    """``[(before, after)]`` of the event's rows with only the columns ``names``
    (see the module docstring); None when the full decoding must be used."""
    if not isinstance(event, _ROW_EVENT_TYPES) or not getattr(event, "complete", True) \
            or getattr(event, "packet", None) is None:     # a made-up event: no bytes
        return None
    if event.event_type == BINLOG.PARTIAL_UPDATE_ROWS_EVENT:
        return None
    if getattr(event, "_RowsEvent__rows", None) is not None:
        return None                    # decoded already: its bytes are consumed
    columns = event.columns
    names = frozenset(names)
    update = isinstance(event, UpdateRowsEvent)
    try:
        first = _plan(columns, names, event.columns_present_bitmap)
        if first is None:
            return None
        second = _plan(columns, names, event.columns_present_bitmap2) if update else None
        packet = event.packet
        data = packet.read(event.event_size - packet.read_bytes)
    except Unreadable:
        return None
    out: list[tuple[dict | None, dict | None]] = []
    at = 0
    try:
        while at < len(data):
            image, at = _image(first, data, at)
            if update:
                after, at = _image(second, data, at)
                out.append((image, after))
            elif isinstance(event, WriteRowsEvent):
                out.append((None, image))
            else:
                out.append((image, None))
    except (Unreadable, IndexError) as exc:     # IndexError: a length past the event
        raise ValueError(f"{event.schema}.{event.table}: cannot read its row images "
                         f"({exc}); the event's bytes are consumed") from None
    return out
