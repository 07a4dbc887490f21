"""The parts of the MariaDB source that need no server: URLs and passwords, the
placeholder translation, GTID positions, the journal file and its ChangeLog,
the service liveness rules."""

from __future__ import annotations

import datetime

import pytest
from pymysqlreplication.row_event import UpdateRowsEvent, WriteRowsEvent

from replica.cell import binlog, binlog_keys, journal, mysql


def test_url_with_password_in_it():
    url = mysql.parse_url("mysql://nova:s%40cret@db.example:3307/nova_cell1")
    assert url == mysql.MySQLURL("nova", "s@cret", "db.example", 3307, "nova_cell1")
    assert url.redacted() == "mysql://nova@db.example:3307/nova_cell1"
    assert "s@cret" not in url.redacted()


def test_url_password_from_a_file_or_the_environment(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text("from-file\nignored\n")
    monkeypatch.setenv(mysql.PASSWORD_ENV, "from-env")
    assert mysql.parse_url("mysql://nova@db/nova", password_file=str(secret)).password == \
        "from-file"
    url = mysql.parse_url("mysql://nova@db/nova")
    assert url.password == "from-env" and url.port == mysql.DEFAULT_PORT
    monkeypatch.delenv(mysql.PASSWORD_ENV)
    assert mysql.parse_url("mysql://nova@db/nova").password is None


def test_a_source_from_command_line_values(tmp_path, monkeypatch):
    monkeypatch.setenv("CELL1_DB_PASSWORD", "pw")
    source = binlog.make_source("mysql://replica@db:3306/nova_cell1",
                                "mysql://replica@db:3306/nova_api", "cell1", str(tmp_path),
                                password_env="CELL1_DB_PASSWORD")
    assert source.journal_path == str(tmp_path / "cell1.journal")
    assert source.schemas == ["nova_cell1", "nova_api"]
    assert source.cell_url.password == source.api_url.password == "pw"


def test_the_nova_options_of_a_mysql_source(tmp_path, monkeypatch):
    """--service-down-time (Nova's 60 unless given; 0 turns it off), --neutron-url and its
    token reach the source; the API database's source publishes flavors and its build
    requests as servers, with no liveness rule."""
    from replica.cell import mysql_source
    monkeypatch.setenv(mysql.PASSWORD_ENV, "pw")
    cell = "mysql://replica@db:3306/nova_cell1"
    api = "mysql://replica@db:3306/nova_api"
    source = mysql_source.make_source(cell, api, "cell1", str(tmp_path),
                                      service_down_time=None, neutron_url=None)
    assert source.service_down_time == 60 and source.neutron_url is None
    assert source.kinds == ("instance_action", "server", "hypervisor",
                            "service") and source.own_servers_only
    source = mysql_source.make_source(cell, api, "cell1", str(tmp_path), service_down_time=0,
                                      neutron_url="http://neutron:9696", neutron_token="t")
    assert (source.service_down_time, source.neutron_url, source.neutron_token) == (
        0, "http://neutron:9696", "t")
    flavors = mysql_source.make_source(api, None, "flavors", str(tmp_path), flavors=True,
                                       service_down_time=None)
    assert flavors.kinds == ("flavor", "keypair", "quota", "server", "aggregate",
                             "server_group") \
        and flavors.service_down_time == 0
    reader = mysql_source.entity_reader(flavors)
    assert reader.build_requests and reader.api_url is None


def test_url_tls_options():
    url = mysql.parse_url("mysql://nova:pw@db/nova?ssl_ca=/etc/ca.pem&ssl_verify_identity=true")
    assert url.tls == (("ssl_ca", "/etc/ca.pem"), ("ssl_verify_identity", True))
    assert url.settings()["ssl_ca"] == "/etc/ca.pem"
    assert mysql.parse_url("mysql://nova:pw@db/nova?ssl_disabled=1").settings()["ssl_disabled"]
    with pytest.raises(mysql.SourceConfigError):
        mysql.parse_url("mysql://nova:pw@db/nova?charset=latin1")


@pytest.mark.parametrize("text", ["sqlite:///x.db", "mysql://db/nova", "mysql://nova@db/",
                                  "mysql://nova@db:notaport/nova", "/path/cell.db"])
def test_bad_urls_are_refused(text):
    with pytest.raises(mysql.SourceConfigError):
        mysql.parse_url(text)


def test_placeholders_are_translated_outside_quotes():
    assert mysql.translate("SELECT a FROM t WHERE b = ? AND c IN (?, ?)") == \
        "SELECT a FROM t WHERE b = %s AND c IN (%s, %s)"
    assert mysql.translate("SELECT '?', `a?`, x FROM t WHERE y LIKE 'a%' AND z = ?") == \
        "SELECT '?', `a?`, x FROM t WHERE y LIKE 'a%%' AND z = %s"


def test_gtid_positions():
    assert binlog.parse_position("") == {}
    assert binlog.parse_position("0-1-42,1-2-7") == {0: (1, 42), 1: (2, 7)}
    assert binlog.advance("0-1-42", "0-1-43") == "0-1-43"
    assert binlog.advance("0-1-42", "1-3-1") == "0-1-42,1-3-1"
    assert binlog.advance("", "0-1-1") == "0-1-1"
    assert binlog.is_behind("0-1-41", "0-1-42")
    assert binlog.is_behind("1-1-50", "0-1-42")             # a domain missing
    assert not binlog.is_behind("0-2-43", "0-1-42")         # failover within the domain
    assert not binlog.is_behind("0-1-42,1-1-1", "0-1-42")
    assert not binlog.is_behind("0-1-1", "")


def test_journal_appends_gapless_seqs_with_the_position(tmp_path):
    path = str(tmp_path / "c.journal")
    writer = journal.Journal(path)
    reader = journal.JournalChangeLog(path)
    try:
        assert writer.state() is None
        state = writer.new_epoch("server_id=1", "0-1-5", "first attach")
        assert (state.head, state.position) == (0, "0-1-5")
        assert reader.epoch() == state.epoch and reader.head() == 0 and reader.oldest() == 1
        assert writer.append([("server", "a"), ("server", "b"), ("server", "a")],
                             "0-1-6", "0-1-6", "0-1-5", "t6") == (1, 2)
        assert writer.append([], "0-1-7", "0-1-7", "0-1-6", "t7") == (3, 2)
        assert writer.append([("flavor", "1")], "0-1-8", "0-1-8", "0-1-7", "t8") == (3, 3)
        assert reader.events_after(0, 10) == [(1, "server", "a"), (2, "server", "b"),
                                              (3, "flavor", "1")]
        assert reader.events_after(1, 1) == [(2, "server", "b")]
        assert reader.last_changed("server", ["a", "b", "c"]) == {"a": 1, "b": 2}
        state = reader.state()
        assert (state.head, state.position, state.verify_position, state.last_transaction) == \
            (3, "0-1-8", "0-1-7", "t8")
        renewed = writer.new_epoch("server_id=1", "0-1-9", "binlog purged")
        assert renewed.epoch != state.epoch and reader.head() == 0
        assert reader.events_after(0, 10) == []
    finally:
        writer.close()
        reader.close()


def test_journal_appends_a_group_of_transactions_in_one_commit(tmp_path):
    path = str(tmp_path / "c.journal")
    writer = journal.Journal(path)
    reader = journal.JournalChangeLog(path)
    try:
        writer.new_epoch("server_id=1", "0-1-5", "first attach")
        group = [([("server", "a"), ("server", "b"), ("server", "a")], "0-1-6"),
                 ([], "0-1-7"),
                 ([("server", "a")], "0-1-8")]
        assert writer.append_transactions(group, "0-1-8", "0-1-7", "t8") == (1, 3)
        assert reader.conn.execute("SELECT seq, key, gtid FROM journal ORDER BY seq").fetchall() \
            == [(1, "a", "0-1-6"), (2, "b", "0-1-6"), (3, "a", "0-1-8")]
        state = reader.state()
        assert (state.head, state.position, state.verify_position, state.last_transaction) == \
            (3, "0-1-8", "0-1-7", "t8")
        assert writer.append_transactions([([], "0-1-9")], "0-1-9", "0-1-8", "t9") == (4, 3)
        assert reader.state().position == "0-1-9" and reader.head() == 3
    finally:
        writer.close()
        reader.close()


def test_journal_prune_keeps_a_gapless_tail_and_the_head(tmp_path):
    path = str(tmp_path / "c.journal")
    writer = journal.Journal(path)
    reader = journal.JournalChangeLog(path)
    try:
        writer.new_epoch("server_id=1", "", "first attach")
        for number in range(1, 11):
            writer.append([("server", f"k{number}")], f"0-1-{number}", f"0-1-{number}",
                          f"0-1-{number - 1}", f"t{number}")
        # Kept while among the newest keep_events AND younger than keep_seconds.
        assert reader.prune(keep_events=4, keep_seconds=3600) == 6
        assert reader.oldest() == 7 and reader.head() == 10
        assert reader.prune(keep_events=100, keep_seconds=3600) == 0
        assert reader.prune(keep_events=100, keep_seconds=0) == 4
        assert reader.oldest() == 11 and reader.head() == 10
        writer.append([("server", "k11")], "0-1-11", "0-1-11", "0-1-10", "t11")
        assert reader.events_after(10, 5) == [(11, "server", "k11")]
    finally:
        writer.close()
        reader.close()


def test_last_changed_takes_many_keys(tmp_path):
    path = str(tmp_path / "c.journal")
    writer = journal.Journal(path)
    reader = journal.JournalChangeLog(path)
    try:
        writer.new_epoch("server_id=1", "", "first attach")
        keys = [f"k{number}" for number in range(2_000)]
        writer.append([("server", k) for k in keys], "0-1-1", "0-1-1", "", "t1")
        found = reader.last_changed("server", keys + ["absent"])
        assert len(found) == 2_000 and found["k1999"] == 2_000
    finally:
        writer.close()
        reader.close()


def test_service_rows_that_matter_for_host_status():
    t0 = datetime.datetime(2026, 1, 1, 10, 0, 0)
    compute = {"host": "h", "binary": "nova-compute", "disabled": 0, "forced_down": 0,
               "deleted": 0, "updated_at": t0, "last_seen_up": None, "created_at": t0}
    later = dict(compute, updated_at=t0 + datetime.timedelta(seconds=10))
    back = dict(compute, updated_at=t0 + datetime.timedelta(seconds=61))
    matters = binlog_keys._service_matters
    assert matters(None, compute, 60) and matters(compute, None, 60)
    assert not matters(compute, later, 60)
    assert matters(compute, back, 60)
    assert matters(compute, dict(compute, forced_down=1), 60)
    assert not matters(dict(compute, binary="nova-scheduler"),
                       dict(compute, binary="nova-scheduler", disabled=1), 60)


def test_liveness_watch_says_once_which_services_went_down():
    now = [datetime.datetime(2026, 1, 1, 12, 0, 0)]
    watch = binlog_keys.LivenessWatch(60, clock=lambda: now[0])
    minute = datetime.timedelta(seconds=60)
    watch.load([("a", None, now[0] - minute + datetime.timedelta(seconds=5), None),
                ("b", now[0], None, None), ("c", None, None, now[0] - 2 * minute)])
    assert watch.crossed() == ["c"]
    assert watch.crossed() == []                     # said once
    now[0] += datetime.timedelta(seconds=10)
    assert watch.crossed() == ["a"]
    assert watch.note("a", now[0])                   # reported again: up
    assert not watch.note("a", now[0])               # up already
    assert not watch.note("b", now[0] - 2 * minute)  # older than what is known: ignored
    assert not watch.note("c", None)                 # deleted: forgotten
    now[0] += datetime.timedelta(seconds=61)
    assert watch.crossed() == ["a", "b"]


class _UnreadableRows:
    """A rows event of a table the mapper must not decode."""
    schema, table = "nova_cell1", "migrations"

    @property
    def rows(self):
        raise AssertionError("rows of an unwatched table were decoded")


def test_rows_of_unwatched_tables_are_not_decoded():
    mapper = binlog_keys.KeyMapper("nova_cell1", "nova_api")
    changed = binlog_keys.ChangedKeys()
    mapper.add(changed, _UnreadableRows())
    assert changed == binlog_keys.ChangedKeys()
    assert "migrations" not in binlog_keys.WATCHED_TABLES
    assert {"instances", "services", "flavors", "instance_mappings", "compute_nodes"} <= \
        set(binlog_keys.WATCHED_TABLES)


class _Written(WriteRowsEvent):
    """A rows event as the stream gives it (no packet behind it)."""

    def __init__(self, schema: str, table: str, values: list[dict], primary_key="id"):
        self.schema, self.table, self.primary_key = schema, table, primary_key
        self._values = values

    @property
    def rows(self):
        return [{"values": values} for values in self._values]


class _Lookups:
    def __init__(self, in_cell):
        self.in_cell = set(in_cell)
        self.asked = []

    def cell_instances(self, uuids):
        self.asked.append(set(uuids))
        return self.in_cell & set(uuids)


def test_a_cell_journals_api_database_rows_only_for_its_own_servers():
    events = [_Written("nova_cell1", "instances", [{"id": 7, "uuid": "here-1"}]),
              _Written("nova_api", "request_specs",
                       [{"id": 1, "instance_uuid": "here-2"}, {"id": 2, "instance_uuid": "elsewhere"}])]
    mapper = binlog_keys.KeyMapper("nova_cell1", "nova_api", kinds=("server",),
                                   own_servers_only=True)
    changed = binlog_keys.ChangedKeys()
    for event in events:
        mapper.add(changed, event)
    lookups = _Lookups(["here-1", "here-2"])
    assert mapper.resolve(changed, lookups) == [("server", "here-1"), ("server", "here-2")]
    assert lookups.asked == [{"here-2", "elsewhere"}]     # cell rows are not looked up
    # the transaction's first changed row is what the tailer waits on before journaling
    assert changed.probe == ("nova_cell1", "instances", (("id", 7),))

    everyone = binlog_keys.KeyMapper("nova_cell1", "nova_api", kinds=("server",))
    changed = binlog_keys.ChangedKeys()
    for event in events:
        everyone.add(changed, event)
    assert everyone.resolve(changed, _Lookups([])) == [
        ("server", "here-1"), ("server", "here-2"), ("server", "elsewhere")]


def test_the_commit_probe_takes_a_composite_primary_key():
    changed = binlog_keys.ChangedKeys()
    binlog_keys.KeyMapper("nova_cell1", None).add(
        changed, _Written("nova_cell1", "tags", [{"resource_id": "u", "tag": "t"}],
                          primary_key=("resource_id", "tag")))
    assert changed.probe == ("nova_cell1", "tags", (("resource_id", "u"), ("tag", "t")))
    assert changed.keys == [("server", "u")]


def test_the_api_database_feed_journals_quota_keys():
    """A flavor source on MariaDB (the API database as both roles): a quotas or
    instance_groups row gives its project's quota key, a quota_classes row the
    defaults'; a cell's feed, without the kind, journals none of them."""
    events = [_Written("nova_api", "quotas", [{"id": 1, "project_id": "p1",
                                               "resource": "cores", "hard_limit": 4}]),
              _Written("nova_api", "instance_groups", [{"id": 2, "project_id": "p2",
                                                        "uuid": "g", "user_id": "u"}]),
              _Written("nova_api", "quota_classes", [{"id": 3, "class_name": "default",
                                                      "resource": "ram", "hard_limit": 1}])]
    mapper = binlog_keys.KeyMapper("nova_api", "nova_api", kinds=("flavor", "quota"))
    changed = binlog_keys.ChangedKeys()
    for event in events:
        mapper.add(changed, event)
    assert mapper.resolve(changed, _Lookups([])) == [
        ("quota", "project/p1"), ("quota", "project/p2"), ("quota", "class/default")]
    cell = binlog_keys.KeyMapper("nova_cell1", "nova_api", kinds=("instance_action", "server"))
    changed = binlog_keys.ChangedKeys()
    for event in events[::2]:
        cell.add(changed, event)
    assert cell.resolve(changed, _Lookups([])) == []


def test_server_group_keys_from_groups_policies_and_members():
    """On the API database's feed an instance_groups row gives its server_group key, a
    policy or member row its group's (looked up by group_id); a member row still gives
    its server's key too."""

    class Groups(_Lookups):
        def server_group_members(self, ids):
            return []

        def group_uuids(self, ids):
            self.asked.append(set(ids))
            return [f"g-{i}" for i in sorted(ids)]

    events = [_Written("nova_api", "instance_groups", [{"id": 1, "uuid": "g-1",
                                                        "project_id": "p", "user_id": "u"}]),
              _Written("nova_api", "instance_group_policy", [{"id": 1, "group_id": 2,
                                                              "policy": "affinity"}]),
              _Written("nova_api", "instance_group_member", [{"id": 1, "group_id": 3,
                                                              "instance_uuid": "s-1"}])]
    api = binlog_keys.KeyMapper("nova_api", "nova_api",
                                kinds=("flavor", "keypair", "quota", "server", "server_group"))
    changed = binlog_keys.ChangedKeys()
    for event in events:
        api.add(changed, event)
    lookups = Groups([])
    assert api.resolve(changed, lookups) == [
        ("server_group", "g-1"), ("quota", "project/p"), ("server", "s-1"),
        ("server_group", "g-2"), ("server_group", "g-3")]
    assert lookups.asked == [{2, 3}]
    assert {"quotas", "quota_classes", "instance_groups"} <= set(binlog_keys.WATCHED_TABLES)


class _Updated(UpdateRowsEvent):
    """An update rows event as the stream gives it (before and after images)."""

    def __init__(self, schema: str, table: str, pairs: list[tuple[dict, dict]]):
        self.schema, self.table, self.primary_key = schema, table, "id"
        self._pairs = pairs

    @property
    def rows(self):
        return [{"before_values": b, "after_values": a} for b, a in self._pairs]


class _NodeLookups(_Lookups):
    def __init__(self, nodes: dict[str, list[str]]):
        super().__init__([])
        self.nodes = nodes

    def live_instances_on(self, hosts):
        return []

    def compute_nodes_on(self, hosts):
        return [uuid for host in sorted(hosts) for uuid in self.nodes.get(host, [])]


def test_a_cell_journals_its_hypervisors():
    """A compute_nodes row gives its hypervisor key (the node's uuid); a nova-compute
    service change a hypervisor shows (disabled, its reason) gives its host's compute
    nodes; a report that changes nothing gives none."""
    service = {"id": 3, "host": "c1", "binary": "nova-compute", "disabled": 0,
               "disabled_reason": None, "forced_down": 0, "deleted": 0,
               "last_seen_up": datetime.datetime(2026, 11, 5, 0, 0, 0)}
    reasoned = {**service, "disabled_reason": "fan"}
    reported = {**service, "last_seen_up": datetime.datetime(2026, 11, 5, 0, 0, 10)}
    mapper = binlog_keys.KeyMapper("nova_cell1", "nova_api",
                                   kinds=("instance_action", "server", "hypervisor"))
    lookups = _NodeLookups({"c1": ["node-a", "node-b"]})
    changed = binlog_keys.ChangedKeys()
    mapper.add(changed, _Written("nova_cell1", "compute_nodes",
                                 [{"id": 1, "uuid": "node-z", "host": "c9"}]))
    mapper.add(changed, _Updated("nova_cell1", "services", [(service, reasoned)]))
    assert mapper.resolve(changed, lookups) == [
        ("hypervisor", "node-z"), ("hypervisor", "node-a"), ("hypervisor", "node-b")]
    changed = binlog_keys.ChangedKeys()
    mapper.add(changed, _Updated("nova_cell1", "services", [(service, reported)]))
    assert mapper.resolve(changed, lookups) == []
    without = binlog_keys.KeyMapper("nova_cell1", "nova_api", kinds=("server",))
    changed = binlog_keys.ChangedKeys()
    without.add(changed, _Updated("nova_cell1", "services", [(service, reasoned)]))
    assert without.resolve(changed, lookups) == []


def test_service_and_aggregate_rows_journal_their_keys():
    """A cell's services row gives its service key (the uuid, before and after); an
    aggregates, aggregate_hosts or aggregate_metadata row of the API database its
    aggregate's key (the id as text), for the feed that publishes the kind only."""
    service = _Written("nova_cell1", "services", [{"id": 4, "uuid": "s-1", "host": "h",
                                                   "binary": "nova-compute"}])
    cell = binlog_keys.KeyMapper("nova_cell1", "nova_api", kinds=("service",))
    changed = binlog_keys.ChangedKeys()
    cell.add(changed, service)
    assert cell.resolve(changed, _Lookups([])) == [("service", "s-1")]
    events = [_Written("nova_api", "aggregates", [{"id": 7, "uuid": "a", "name": "n"}]),
              _Written("nova_api", "aggregate_hosts", [{"id": 1, "host": "h",
                                                        "aggregate_id": 8}]),
              _Written("nova_api", "aggregate_metadata", [{"id": 2, "key": "k", "value": "v",
                                                           "aggregate_id": 9}])]
    api = binlog_keys.KeyMapper("nova_api", "nova_api", kinds=("aggregate", "flavor"))
    changed = binlog_keys.ChangedKeys()
    for event in events:
        api.add(changed, event)
    assert api.resolve(changed, _Lookups([])) == [
        ("aggregate", "7"), ("aggregate", "8"), ("aggregate", "9")]
    for mapper, event in ((binlog_keys.KeyMapper("nova_api", "nova_api", kinds=("flavor",)),
                           events[0]),
                          (binlog_keys.KeyMapper("nova_cell1", "nova_api", kinds=()),
                           service)):
        changed = binlog_keys.ChangedKeys()
        mapper.add(changed, event)
        assert mapper.resolve(changed, _Lookups([])) == []
    assert {"services", "aggregates", "aggregate_hosts", "aggregate_metadata"} <= set(
        binlog_keys.WATCHED_TABLES)


class _ZoneLookups:
    """Lookups over an API database's zoned hosts and a cell's live servers (dicts)."""

    def __init__(self, zones: dict, servers: dict):
        self.zones, self.servers = zones, servers

    def api(self, sql, params=()):
        return sorted(self.zones.items())

    def cell(self, sql, params=()):
        return [(u,) for u, host in sorted(self.servers.items()) if host == params[0]]


def test_a_transaction_on_the_aggregates_journals_the_servers_of_hosts_that_changed_zone():
    lookups = _ZoneLookups({"h1": "zone-1"}, {"s1": "h1", "s2": "h2", "s3": "h2"})
    mapper = binlog_keys.KeyMapper("nova_cell1", "nova_api", kinds=("server",))
    mapper.look_at_zones(lookups)                   # the zones entities are built with
    lookups.zones["h2"] = "zone-1"                  # h2 joins zone-1's aggregate
    changed = binlog_keys.ChangedKeys()
    mapper.add(changed, _Written("nova_api", "aggregate_hosts",
                                 [{"id": 5, "host": "h2", "aggregate_id": 1}]))
    assert changed.zones
    assert mapper.resolve(changed, lookups) == [("server", "s2"), ("server", "s3")]
    # nothing else changed: another aggregate transaction journals nothing
    changed = binlog_keys.ChangedKeys()
    mapper.add(changed, _Written("nova_api", "aggregate_metadata",
                                 [{"id": 9, "aggregate_id": 1, "key": "gpu", "value": "1"}]))
    assert mapper.resolve(changed, lookups) == []
    # a flavor source (no server kind) does not look at zones
    flavors = binlog_keys.KeyMapper("nova_api", "nova_api", kinds=("flavor",))
    changed = binlog_keys.ChangedKeys()
    flavors.add(changed, _Written("nova_api", "aggregate_hosts",
                                  [{"id": 6, "host": "h3", "aggregate_id": 1}]))
    assert not changed.zones
