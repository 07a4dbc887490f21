"""How the cell side talks to a MariaDB/MySQL Nova database: URLs and passwords,
connections (PyMySQL), the portable ``rows(sql, params)`` adapter that the entity
builder uses, a read view (a consistent snapshot on the cell and the API
database), and the server facts the binlog tailer needs (GTID position, binlog
settings).

Nothing here writes to Nova's databases: every connection is used for SELECTs, a
``READ ONLY`` snapshot transaction, or the replication stream. A user with only
``REPLICATION SLAVE, REPLICATION CLIENT`` on ``*.*`` and ``SELECT`` on the Nova
databases is enough.

A URL is ``mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?TLS options]``. The password should not
be in argv: ``password_file`` (first line of a file) or an environment variable
take its place; a password in the URL wins over both (tests, local sockets)."""

from __future__ import annotations

import contextlib
import os
import urllib.parse
import weakref
from dataclasses import dataclass, replace

import pymysql
import pymysql.converters
from pymysql.constants import CLIENT, COMMAND, CR, FIELD_TYPE
from pymysql.protocol import FieldDescriptorPacket, MysqlPacket

DEFAULT_PORT = 3306
CONNECT_TIMEOUT_S = 10
PASSWORD_ENV = "APPLIANCE_MYSQL_PASSWORD"
SCHEMES = ("mysql", "mariadb", "mysql+pymysql")

# What the binlog tailer needs from the server's settings, as the server names them.
REQUIRED_BINLOG_SETTINGS = {
    "log_bin": "ON",
    "binlog_format": "ROW",
    "binlog_row_image": "FULL",
    "binlog_row_metadata": "FULL",
}
MYSQL_REQUIRED_SETTINGS = {"gtid_mode": "ON"}     # MySQL: GTIDs are optional there
MARIADB_IDENTITY = "server_id="                    # a MariaDB server's identity starts so


def is_mariadb_identity(identity: str) -> bool:
    """Whether a journal's server identity (``ServerFacts.identity``) is a MariaDB's."""
    return identity.startswith(MARIADB_IDENTITY)


class SourceConfigError(ValueError):
    """A source URL or server setting that cannot work; not retried."""


# TLS options a source URL may carry as query parameters (PyMySQL's names):
# ``?ssl_ca=/etc/ssl/db-ca.pem&ssl_verify_identity=true``. Without any, PyMySQL
# uses TLS when the server offers it, unverified; ``ssl_disabled=true`` never.
TLS_PATHS = ("ssl_ca", "ssl_cert", "ssl_key")
TLS_FLAGS = ("ssl_verify_cert", "ssl_verify_identity", "ssl_disabled")
TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


@dataclass(frozen=True)
class MySQLURL:
    user: str
    password: str | None
    host: str
    port: int
    database: str
    tls: tuple = ()                # ((PyMySQL option, value), ...)

    def redacted(self) -> str:
        """The URL without its password, for logs and status."""
        return f"mysql://{self.user}@{self.host}:{self.port}/{self.database}"

    def with_database(self, database: str) -> "MySQLURL":
        return replace(self, database=database)

    def settings(self) -> dict:
        """Keyword arguments for ``pymysql.connect`` (and the replication stream)."""
        return {"host": self.host, "port": self.port, "user": self.user,
                "password": self.password or "", "database": self.database,
                "charset": "utf8mb4", "connect_timeout": CONNECT_TIMEOUT_S, **dict(self.tls)}


def is_mysql_url(text: str) -> bool:
    return urllib.parse.urlsplit(text).scheme in SCHEMES


def read_password(password_file: str | None = None, env: str = PASSWORD_ENV) -> str | None:
    """The password from ``password_file`` (its first line) or else from the
    environment variable ``env``; None when neither gives one."""
    if password_file:
        with open(password_file, encoding="utf-8") as handle:
            return handle.readline().rstrip("\r\n")
    value = os.environ.get(env)
    return value if value else None


def parse_url(text: str, password_file: str | None = None,
              password_env: str = PASSWORD_ENV) -> MySQLURL:
    """Parse ``mysql://USER[:PASS]@HOST[:PORT]/DB``; the password comes from the URL,
    else ``password_file``, else the environment variable ``password_env``."""
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in SCHEMES:
        raise SourceConfigError(f"not a mysql:// URL: {parts.scheme or text!r}")
    database = urllib.parse.unquote(parts.path.lstrip("/"))
    if not parts.hostname or not parts.username or not database or "/" in database:
        raise SourceConfigError("a source URL is mysql://USER[:PASSWORD]@HOST[:PORT]/DATABASE")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise SourceConfigError(f"bad port in source URL: {exc}") from None
    password = urllib.parse.unquote(parts.password) if parts.password is not None else None
    if password is None:
        password = read_password(password_file, password_env)
    return MySQLURL(user=urllib.parse.unquote(parts.username), password=password,
                    host=parts.hostname, port=port, database=database,
                    tls=_tls_options(parts.query))


def _tls_options(query: str) -> tuple:
    options = []
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=True):
        if name in TLS_PATHS and value:
            options.append((name, value))
        elif name in TLS_FLAGS and value.lower() in TRUE_WORDS + FALSE_WORDS:
            options.append((name, value.lower() in TRUE_WORDS))
        else:
            raise SourceConfigError(f"unknown or empty source URL option {name}={value!r} "
                                    f"(known: {', '.join(TLS_PATHS + TLS_FLAGS)})")
    return tuple(options)


def _sqlite_datetime(text) -> str:
    """A DATETIME as Nova's SQLAlchemy stores it in SQLite (``YYYY-MM-DD
    HH:MM:SS.ffffff``): MariaDB's DATETIME has whole seconds."""
    if isinstance(text, bytes):
        text = text.decode("ascii")
    if text.startswith("0000-00-00"):
        return None
    whole, _dot, fraction = text.partition(".")
    return f"{whole}.{fraction.ljust(6, '0')[:6]}"


# Values as the SQLite cell database gives them, so that the portable entity
# builder sees one set of types: datetimes as SQLite text (dates and times stay
# PyMySQL's text too).
PORTABLE_CONVERSIONS = dict(pymysql.converters.conversions)
PORTABLE_CONVERSIONS[FIELD_TYPE.DATETIME] = _sqlite_datetime
PORTABLE_CONVERSIONS[FIELD_TYPE.TIMESTAMP] = _sqlite_datetime
PORTABLE_CONVERSIONS[FIELD_TYPE.DATE] = str
# Standard SQL as SQLite reads it: "x" is an identifier, || concatenates.
PORTABLE_SQL_MODE = ("SET SESSION sql_mode = CONCAT_WS(',', NULLIF(@@SESSION.sql_mode, ''), "
                     "'ANSI_QUOTES', 'PIPES_AS_CONCAT')")


_MAX_PACKET_LEN = 2 ** 24 - 1      # a payload this long continues in the next packet


def _row_of(data: bytes, columns: tuple) -> tuple:
    """One text-protocol row packet's values, as PyMySQL's ``_read_row_from_packet``
    gives them (``columns``: its (encoding, converter) per column), without a method
    call per value: length-coded strings read by index from the packet's bytes."""
    row = []
    append = row.append
    pos, end = 0, len(data)
    for encoding, converter in columns:
        if pos >= end:                 # no more columns in this row (as PyMySQL)
            break
        length = data[pos]
        if length < 251:
            pos += 1
        elif length == 251:            # NULL
            pos += 1
            append(None)
            continue
        elif length == 252:
            length = data[pos + 1] | data[pos + 2] << 8
            pos += 3
        elif length == 253:
            length = data[pos + 1] | data[pos + 2] << 8 | data[pos + 3] << 16
            pos += 4
        elif length == 254:
            length = int.from_bytes(data[pos + 1:pos + 9], "little")
            pos += 9
        else:                          # 255: no length (PyMySQL reads None)
            pos += 1
            append(None)
            continue
        value = data[pos:pos + length]
        pos += length
        if encoding is not None:
            value = value.decode(encoding)
        if converter is not None:
            value = converter(value)
        append(value)
    if pos > end:
        raise pymysql.err.InternalError(f"a row packet of {end} bytes ends inside a value")
    return tuple(row)


def _wrong_sequence(conn, number: int) -> None:
    """A packet out of sequence, raised as PyMySQL's ``_read_packet`` raises it."""
    conn._force_close()
    if number == 0:                    # MariaDB's error packet when it shuts down
        raise pymysql.err.OperationalError(CR.CR_SERVER_LOST,
                                           "Lost connection to MySQL server during query")
    raise pymysql.err.InternalError(
        f"Packet sequence number wrong - got {number} expected {conn._next_seq_id}")


def _read_payload(conn) -> bytes:
    """The next packet's payload (joined with the ones that continue it: a payload of
    16 MiB or more), with PyMySQL's checks: sequence numbers; an error packet is
    raised as the server's error."""
    parts = []
    while True:
        header = conn._read_bytes(4)
        length = header[0] | header[1] << 8 | header[2] << 16
        if header[3] != conn._next_seq_id:
            _wrong_sequence(conn, header[3])
        conn._next_seq_id = (conn._next_seq_id + 1) % 256
        parts.append(conn._read_bytes(length))
        if length < _MAX_PACKET_LEN:
            break
    data = parts[0] if len(parts) == 1 else b"".join(parts)
    if data[:1] == b"\xff":
        MysqlPacket(data, conn.encoding).raise_for_error()
    return data


def _column_of(data: bytes, conn) -> tuple:
    """A column definition packet read as PyMySQL reads it: (the field, its DB-API
    description, the encoding its values are read with)."""
    field = FieldDescriptorPacket(data, conn.encoding)
    if not conn.use_unicode:
        encoding = None
    elif field.type_code == FIELD_TYPE.JSON:
        encoding = conn.encoding       # JSON columns come as binary; their text is the
    elif field.type_code in pymysql.connections.TEXT_TYPES:     # connection's encoding
        encoding = None if field.charsetnr == 63 else conn.encoding     # 63: binary
    else:
        encoding = "ascii"             # numbers, dates and times
    return field, field.description(), encoding


# Column definitions already read, by their packet's bytes and what reading them
# depends on: a query sent again (the publisher sends the same few hundred texts)
# gets the same packets, read once. Bounded: emptied when full.
_COLUMNS_SEEN: dict[tuple, tuple] = {}
_COLUMNS_SEEN_MAX = 4096


class _RowsResult(pymysql.connections.MySQLResult):
    """PyMySQL's buffered result with its rows read in a tight loop (``_row_of``):
    PyMySQL parses each value through three method calls, most of the publisher's
    CPU during a snapshot. Same packets, same checks (sequence, errors, EOF), same
    values. Its column definitions are read once per distinct packet
    (``_COLUMNS_SEEN``): parsing them was a third of the publisher's CPU on live
    batches of a few servers (about 70 columns in 14 result sets per batch)."""

    def _get_descriptions(self):
        conn = self.connection
        context = (conn.encoding, conn.use_unicode)
        decoders, through = conn.decoders, pymysql.converters.through
        fields, descriptions, converters = [], [], []
        for _column in range(self.field_count):
            data = _read_payload(conn)
            key = (data, context)
            column = _COLUMNS_SEEN.get(key)
            if column is None:
                column = _column_of(data, conn)
                if len(_COLUMNS_SEEN) >= _COLUMNS_SEEN_MAX:
                    _COLUMNS_SEEN.clear()
                _COLUMNS_SEEN[key] = column
            field, description, encoding = column
            converter = decoders.get(field.type_code)
            fields.append(field)
            descriptions.append(description)
            converters.append((encoding, None if converter is through else converter))
        eof = _read_payload(conn)
        if not (eof[:1] == b"\xfe" and len(eof) < 9):
            raise pymysql.err.InternalError("Protocol error, expecting EOF")
        self.fields, self.converters = fields, converters
        self.description = tuple(descriptions)

    def _read_rowdata_packet(self):
        conn = self.connection
        columns = tuple((None, int) if encoding == "ascii" and converter is int
                        else (encoding, converter)     # int() reads ASCII digits as bytes
                        for encoding, converter in self.converters)
        rows = []
        append = rows.append
        if conn._current_timeout != conn._read_timeout:
            conn._sock.settimeout(conn._read_timeout)
            conn._current_timeout = conn._read_timeout
        while True:
            data = _read_payload(conn)
            if data[:1] == b"\xfe" and len(data) < 9:     # EOF: the last row was read
                self._check_packet_is_eof(MysqlPacket(data, conn.encoding))
                self.connection = None
                break
            append(_row_of(data, columns))
        self.affected_rows = len(rows)
        self.rows = tuple(rows)


class ReadViewConnection(pymysql.connections.Connection):
    """A portable connection whose read views end without a wait: the ``ROLLBACK``
    that ends one is sent at once (the server lets go of the view then) and its
    reply is read before the connection's next command, whatever sends it (PyMySQL
    sends every command through ``_execute_command``). Its result rows are read by
    ``_RowsResult``."""

    _end_unread = False

    def _read_query_result(self, unbuffered=False):
        if unbuffered:
            return super()._read_query_result(unbuffered)
        self._result = None
        result = _RowsResult(self)
        result.read()
        self._result = result
        if result.server_status is not None:
            self.server_status = result.server_status
        return result.affected_rows

    def end_without_waiting(self) -> None:
        self._execute_command(COMMAND.COM_QUERY, "ROLLBACK")
        self._end_unread = True

    def _execute_command(self, command, sql):
        if self._end_unread:
            self._end_unread = False
            self._read_ok_packet()         # the ROLLBACK's reply, already on its way
        return super()._execute_command(command, sql)


def connect(url: MySQLURL, read_timeout: float | None = None,
            select_database: bool = True, portable: bool = False,
            ) -> pymysql.connections.Connection:
    """A plain autocommit connection (tuple rows) to ``url``'s database (to the
    server only, without ``select_database``: server facts need no database).
    ``portable``: for the entity builder's SQL, values and quoting as SQLite's
    (``PORTABLE_CONVERSIONS``, ``ANSI_QUOTES``, ``PIPES_AS_CONCAT``), and several
    statements allowed in one query (``Rows.many``)."""
    settings = url.settings()
    if not select_database:
        settings.pop("database")
    if portable:
        settings["conv"] = PORTABLE_CONVERSIONS
        settings["init_command"] = PORTABLE_SQL_MODE
        settings["client_flag"] = CLIENT.MULTI_STATEMENTS     # Rows.many: one round trip
        return ReadViewConnection(**settings, autocommit=True, read_timeout=read_timeout)
    return pymysql.connect(**settings, autocommit=True, read_timeout=read_timeout)


def translate(sql: str) -> str:
    """Portable ``?`` placeholders to PyMySQL's ``%s``; a literal ``%`` is doubled.
    Quoted strings and identifiers are left as they are (but their ``%`` doubled,
    since PyMySQL formats the whole statement)."""
    out = []
    quote = None
    for char in sql:
        if quote:
            if char == quote:
                quote = None
            out.append("%%" if char == "%" else char)
        elif char in ("'", '"', "`"):
            quote = char
            out.append(char)
        elif char == "?":
            out.append("%s")
        elif char == "%":
            out.append("%%")
        else:
            out.append(char)
    return "".join(out)


class Rows:
    """``rows(sql, params) -> list[tuple]`` over one PyMySQL connection, with the
    translated statements cached (the entity builder runs the same few)."""

    def __init__(self, conn: pymysql.connections.Connection):
        self.conn = conn
        self._translated: dict[str, str] = {}

    def __call__(self, sql: str, params=()) -> list[tuple]:
        statement = self._translated.get(sql)
        if statement is None:
            statement = self._translated[sql] = translate(sql)
        with self.conn.cursor() as cursor:
            start = _DEFERRED_START.pop(self.conn, None)
            if start is None:
                cursor.execute(statement, tuple(params) if params else None)
            else:                    # the read view's start, in the same round trip
                self._execute_started(cursor, start, [
                    cursor.mogrify(statement, tuple(params) if params else None)])
            return list(cursor.fetchall())

    rows = __call__          # the entity builder's ``Rows`` protocol

    def many(self, statements: list[tuple[str, tuple]]) -> list[list[tuple]]:
        """Several SELECTs (``(sql, params)``) in one round trip to the server (the
        connection is made ``portable``: it allows several statements in one query),
        each one's rows in order: what calling ``rows`` on each would give."""
        return self._receive(self._send(statements))

    def many_together(self, statements: list[tuple[str, tuple]], other: "Rows",
                      other_statements: list[tuple[str, tuple]],
                      ) -> tuple[list[list[tuple]], list[list[tuple]]]:
        """``many`` on this connection and ``other``'s at once: both queries are sent
        before either reply is read, so the two servers (or the two sessions of one)
        work on them together and the caller waits for one round trip, not two. Each
        connection's results, read view and recovery are those of its own ``many``."""
        mine = self._send(statements)
        try:
            theirs = other._send(other_statements)
        except BaseException:
            with contextlib.suppress(Exception):
                self._receive(mine)      # this connection's reply, read off the wire
            raise
        try:
            first = self._receive(mine)
        except BaseException:
            with contextlib.suppress(Exception):
                other._receive(theirs)
            raise
        return first, other._receive(theirs)

    def _send(self, statements: list[tuple[str, tuple]]) -> "_SentQuery":
        """Send ``statements`` as one query (with the read view's deferred start, if
        any) without reading the reply. A connection lost before the view's first
        read is noted, and connected again when the reply is read (``_receive``)."""
        texts = []
        cursor = self.conn.cursor()
        for sql, params in statements:
            statement = self._translated.get(sql)
            if statement is None:
                statement = self._translated[sql] = translate(sql)
            texts.append(cursor.mogrify(statement, tuple(params) if params else None))
        start = _DEFERRED_START.pop(self.conn, None)
        query = ";\n".join(texts if start is None else [start] + texts)
        sent = _SentQuery(cursor, texts, start, query, len(statements))
        try:
            self.conn._execute_command(COMMAND.COM_QUERY, query.encode(self.conn.encoding))
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError) as exc:
            if self.conn.open or start is None:
                cursor.close()
                raise
            sent.lost = exc
        return sent

    def _receive(self, sent: "_SentQuery") -> list[list[tuple]]:
        """The rows of each statement of a query ``_send`` sent, in order."""
        cursor = sent.cursor
        with cursor:
            try:
                if sent.lost is not None:
                    raise sent.lost
                cursor._executed = sent.query
                cursor._clear_result()
                self.conn._affected_rows = self.conn._read_query_result()
                cursor._do_get_result()
            except (pymysql.err.OperationalError, pymysql.err.InterfaceError):
                if self.conn.open or sent.start is None:
                    raise                # an error of the statements, not of the connection
                # Lost before the view's first read: nothing was read in it on this
                # connection, so connect again and send the query once more.
                self.conn.connect()
                cursor.execute(";\n".join([_REPEATABLE_READ_SQL, sent.start] + sent.texts))
                cursor.nextset()
            if sent.start is not None:
                cursor.nextset()         # past the start's empty result
            out = [list(cursor.fetchall())]
            while cursor.nextset():
                out.append(list(cursor.fetchall()))
        if len(out) != sent.count:
            raise pymysql.err.ProgrammingError(
                f"{sent.count} statements gave {len(out)} results")
        return out

    def _execute_started(self, cursor, start: str, texts: list[str]) -> None:
        """``texts`` (formatted statements) after the read view's deferred ``start``,
        in one query; the cursor is left at the first statement's result. A
        connection lost meanwhile (a restarted server) is connected again and the
        query sent once more: nothing was read in this view on it yet, as when the
        view was started on entry."""
        try:
            cursor.execute(";\n".join([start] + texts))
        except (pymysql.err.OperationalError, pymysql.err.InterfaceError):
            if self.conn.open:
                raise                    # an error of the statements, not of the connection
            self.conn.connect()
            cursor.execute(";\n".join([_REPEATABLE_READ_SQL, start] + texts))
            cursor.nextset()
        cursor.nextset()                 # past the start's empty result


@dataclass
class _SentQuery:
    """A query ``Rows._send`` sent whose reply is not read yet."""
    cursor: object
    texts: list
    start: str | None            # the read view's deferred start, sent first
    query: str
    count: int                   # statements, without the start
    lost: BaseException | None = None     # the connection was lost when sending


# Connections whose session isolation level read_view has set (a new connection,
# after a reconnect, is set again).
_REPEATABLE_READ: "weakref.WeakSet[pymysql.connections.Connection]" = weakref.WeakSet()
_REPEATABLE_READ_SQL = "SET SESSION TRANSACTION ISOLATION LEVEL REPEATABLE READ"
# Connections in a read view fixed at the first read whose START TRANSACTION is not
# sent yet: ``Rows`` sends it with the first statement, in one round trip.
_DEFERRED_START: "weakref.WeakKeyDictionary[pymysql.connections.Connection, str]" = \
    weakref.WeakKeyDictionary()


@contextlib.contextmanager
def read_view(*conns: pymysql.connections.Connection, at_entry: bool = True):
    """A consistent, read-only snapshot on each connection (REPEATABLE READ), rolled
    back at the end.

    ``at_entry=True``: ``START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY``, the
    state is fixed when the block is entered. ``at_entry=False``: ``START
    TRANSACTION READ ONLY``, InnoDB fixes the state at the connection's first read
    in the block: what the seam's ``EntityReader.read_view()`` promises, so that a
    change log head read inside the block before any entity read still comes
    first (the consistency rule). On a connection that allows several statements
    in one query (``portable``) that start is not sent on entry but together with
    the block's first statement through ``Rows`` (the state is fixed at that read
    either way): one round trip fewer, and none at all, not even the rollback, on a
    connection the block does not read. A portable connection's view ends without
    waiting for the server's reply (``ReadViewConnection``).

    Each connection's snapshot is consistent in itself; two databases read through
    two connections are two snapshots taken one after the other (the consistency
    rule makes that enough: a change between them is journaled and rebuilt later)."""
    start = ("START TRANSACTION WITH CONSISTENT SNAPSHOT, READ ONLY" if at_entry
             else "START TRANSACTION READ ONLY")
    opened = []
    try:
        for conn in conns:
            with conn.cursor() as cursor:
                if conn not in _REPEATABLE_READ:     # once per connection, not per view
                    cursor.execute(_REPEATABLE_READ_SQL)
                    _REPEATABLE_READ.add(conn)
                opened.append(conn)
                if at_entry or not conn.client_flag & CLIENT.MULTI_STATEMENTS:
                    cursor.execute(start)
                else:
                    _DEFERRED_START[conn] = start
        yield conns
    finally:
        for conn in opened:
            if _DEFERRED_START.pop(conn, None) is not None:
                continue                             # never started: nothing to end
            with contextlib.suppress(pymysql.Error):
                if isinstance(conn, ReadViewConnection):
                    conn.end_without_waiting()
                else:
                    conn.rollback()


@dataclass(frozen=True)
class ServerFacts:
    """What the tailer checks before it streams, read with plain SELECTs."""
    version: str
    is_mariadb: bool
    server_id: int
    server_uuid: str | None        # MySQL's @@server_uuid; MariaDB has none
    gtid_binlog_pos: str           # MariaDB: the GTID position after the last binlogged transaction
    gtid_executed: str | None      # MySQL's executed GTID set
    settings: dict

    def identity(self) -> str:
        """What names the server in the journal: MySQL's server_uuid, else
        MariaDB's server_id (a new datadir keeps the id: the journal's last
        transaction is checked against the binlog as well, see binlog.py)."""
        return self.server_uuid or f"{MARIADB_IDENTITY}{self.server_id}"

    @property
    def position(self) -> str:
        """Where the server's binlog is now, as the journal keeps positions: MariaDB's
        ``@@gtid_binlog_pos``, MySQL's ``@@gtid_executed`` in canonical form
        (``gtid_sets.py``)."""
        if self.is_mariadb:
            return self.gtid_binlog_pos
        from replica.cell import gtid_sets
        return gtid_sets.canonical(self.gtid_executed or "")


def _variable(cursor, name: str):
    cursor.execute("SHOW GLOBAL VARIABLES LIKE %s", (name,))
    row = cursor.fetchone()
    return row[1] if row else None


def server_facts(conn: pymysql.connections.Connection) -> ServerFacts:
    with conn.cursor() as cursor:
        cursor.execute("SELECT VERSION(), @@server_id")
        version, server_id = cursor.fetchone()
        is_mariadb = "mariadb" in version.lower()
        settings = {name: _variable(cursor, name) for name in REQUIRED_BINLOG_SETTINGS}
        if not is_mariadb:
            settings.update({name: _variable(cursor, name) for name in MYSQL_REQUIRED_SETTINGS})
        server_uuid = None if is_mariadb else _variable(cursor, "server_uuid")
        gtid_binlog_pos = (_variable(cursor, "gtid_binlog_pos") or "") if is_mariadb else ""
        gtid_executed = None if is_mariadb else _variable(cursor, "gtid_executed")
    return ServerFacts(version=version, is_mariadb=is_mariadb, server_id=int(server_id),
                       server_uuid=server_uuid, gtid_binlog_pos=gtid_binlog_pos,
                       gtid_executed=gtid_executed, settings=settings)


def check_binlog_settings(facts: ServerFacts) -> None:
    """Raise SourceConfigError naming every binlog setting that is not as needed."""
    required = dict(REQUIRED_BINLOG_SETTINGS)
    if not facts.is_mariadb:
        required.update(MYSQL_REQUIRED_SETTINGS)
    wrong = [f"{name}={facts.settings.get(name)!r} (needs {want})"
             for name, want in required.items()
             if str(facts.settings.get(name) or "").upper() != want]
    if wrong:
        raise SourceConfigError("the server's binlog cannot feed the replica: " + ", ".join(wrong))


def binary_logs(conn: pymysql.connections.Connection) -> list[tuple[str, int]]:
    """``SHOW BINARY LOGS`` (needs REPLICATION CLIENT / BINLOG MONITOR)."""
    with conn.cursor() as cursor:
        cursor.execute("SHOW BINARY LOGS")
        return [(row[0], int(row[1])) for row in cursor.fetchall()]


class SourceDatabases:
    """The cell database and Nova's API database of one MariaDB/MySQL source, for
    the entity reader: ``cell_rows`` / ``api_rows`` are the portable
    ``rows(sql, params)`` adapters (values and quoting as SQLite's, see
    ``connect``), ``read_view()`` holds a consistent snapshot on
    both while the caller reads, each fixed at its first read in the block (as
    the seam's EntityReader promises; ``at_entry=True`` fixes them on entry).
    Open in the process and thread that use it."""

    def __init__(self, cell_url: MySQLURL, api_url: MySQLURL | None):
        self.cell_conn = connect(cell_url, portable=True)
        self.api_conn = connect(api_url, portable=True) if api_url else None
        self.cell_rows = Rows(self.cell_conn)
        self.api_rows = Rows(self.api_conn) if self.api_conn else None

    @contextlib.contextmanager
    def read_view(self, at_entry: bool = False):
        with read_view(*(c for c in (self.cell_conn, self.api_conn) if c is not None),
                       at_entry=at_entry):
            yield self

    def close(self) -> None:
        for conn in (self.cell_conn, self.api_conn):
            if conn is not None:
                with contextlib.suppress(pymysql.Error):
                    conn.close()
