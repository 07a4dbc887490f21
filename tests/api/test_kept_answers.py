"""Whole-collection reads (services, availability zones, hypervisors, aggregates, key
pairs, server groups) answer from the answer the reader kept while nothing was
committed, and, where the body depends on the clock (a service's up/down), only until
the first moment a row may flip: still one statement, which then reads no row."""

from __future__ import annotations

import datetime
import json
import time

import apsw
import pytest

from replica.store.connection import open_reader, open_writer
from replica.store import reader as reader_mod
from replica.store.reader import Reader
from tests.api import entities as E

SETTLE_S = 0.005        # SQLite's clock has milliseconds; the test's stamps microseconds


def _utc(delta_s: float = 0.0) -> datetime.datetime:
    return datetime.datetime.utcnow() + datetime.timedelta(seconds=delta_s)


def _stamp(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")


@pytest.fixture
def replica(tmp_path):
    path = str(tmp_path / "replica.db")
    E.fill_replica(path, [], [E.flavor()], {"cell1": 1, "flavors": 1})
    return path


@pytest.fixture
def reader(replica):
    r = Reader(open_reader(replica))
    yield r
    r.conn.close()


def _states(body: bytes) -> dict[str, str]:
    return {s["host"]: s["state"] for s in json.loads(body)["services"]}


def _alive(body: bytes) -> dict[str, bool]:
    """Each listed host's nova-compute "available" in the zones' detail."""
    return {host: binaries["nova-compute"]["available"]
            for zone in json.loads(body)["availabilityZoneInfo"]
            for host, binaries in (zone["hosts"] or {}).items()}


def _collections(r: Reader) -> dict[str, tuple]:
    """Every kept read once: its whole answer as a tuple of comparable values."""
    hv_matched, hv = r.list_hypervisors("h_detail_v21", False, None, None, None, False, False)
    return {
        "services": (r.list_services(None, None, False, False).body,),
        "zones": (r.availability_zones(False).body,),
        "zones_detail": (r.availability_zones(True).body,),
        "hypervisors": (hv.body, hv.count, hv.last_id, hv.marker_found, hv_matched),
        "aggregates": (r.list_aggregates(False).body,),
        "keypairs": (r.list_keypairs("u1", False, None, None).body,),
        "server_groups": (r.list_server_groups(None, 1000, 0, 1).body,),
    }


def _fill_every_kind(path: str, n: int, disabled: bool = False) -> None:
    E.fill_zones(path, [("cell1", E.service(i, f"compute-{i}", disabled=disabled and i == 1))
                        for i in range(1, n + 1)],
                 [E.zoned_aggregate(1, "az-1", ["compute-1"])])
    E.fill_hypervisors(path, [("cell1", E.hypervisor(i, f"compute-{i}"))
                              for i in range(1, n + 1)])
    E.fill_keypairs(path, [E.keypair("u1", f"key-{i}", i) for i in range(1, n + 1)])
    E.fill_server_groups(path, [E.server_group(i) for i in range(1, n + 1)])


def test_a_kept_answer_is_served_while_nothing_is_committed(replica, reader):
    _fill_every_kind(replica, 3)
    first = _collections(reader)
    again = _collections(reader)
    for name, answer in first.items():
        assert again[name] == answer, name
        # the very object kept: nothing was built again
        assert again[name][0] is answer[0], name
    assert len(reader._answers) == len(first)


def test_a_commit_by_another_connection_gives_the_new_answer(replica, reader):
    _fill_every_kind(replica, 2)
    first = _collections(reader)
    E.fill_kind(replica, "service", "cell1", [E.service(1, "compute-1", disabled=True)])
    after = _collections(reader)
    assert json.loads(after["services"][0])["services"][0]["status"] == "disabled"
    assert json.loads(first["services"][0])["services"][0]["status"] == "enabled"
    E.fill_keypairs(replica, [E.keypair("u1", "key-new", 99)])
    names = [k["keypair"]["name"] for k in json.loads(
        reader.list_keypairs("u1", False, None, None).body + b"}")["keypairs"]]
    assert "key-new" in names
    # a kept answer comes with the position the statement read
    kept = reader.list_aggregates(False)
    assert kept.position == "cell1=1,flavors=1"
    _set_position(replica, "cell1", 7)
    moved = reader.list_aggregates(False)
    assert moved.position == "cell1=7,flavors=1" and moved.body == kept.body


def _set_position(path: str, cell: str, seq: int) -> None:
    conn = open_writer(path)
    with conn:
        conn.execute("UPDATE positions SET seq = ? WHERE cell = ?", (seq, cell))
    conn.close()


def _vm_steps(r: Reader, read) -> int:
    """The virtual machine steps of one read (the progress handler's count, one per
    step)."""
    steps = [0]

    def count():
        steps[0] += 1
        return False
    r.conn.set_progress_handler(count, 1)
    try:
        read()
    finally:
        r.conn.set_progress_handler(r._past_deadline, 1000)
    return steps[0]


@pytest.mark.parametrize("rows", [3, 200])
def test_a_kept_answer_reads_no_row(replica, reader, rows):
    """The statement that answers from the kept answer costs the same whatever the
    collection's size: its CASE skips the build and the CTEs behind it."""
    _fill_every_kind(replica, rows)
    reads = {
        "services": lambda: reader.list_services(None, None, False, False),
        "zones_detail": lambda: reader.availability_zones(True),
        "hypervisors": lambda: reader.list_hypervisors("h_detail_v21", False, None, None,
                                                       None, False, False),
        "server_groups": lambda: reader.list_server_groups(None, 1000, 0, 1),
    }
    for name, read in reads.items():
        built = _vm_steps(reader, read)
        kept = _vm_steps(reader, read)
        assert kept < 200 < built, (name, kept, built)


def _wait_for(read, wanted, timeout_s: float, interval_s: float = 0.01):
    """Read until ``wanted(answer)``; returns every (time before, time after, answer)."""
    seen = []
    deadline = time.monotonic() + timeout_s
    while True:
        before = _utc()
        answer = read()
        seen.append((before, _utc(), answer))
        if wanted(answer):
            return seen
        assert time.monotonic() < deadline, f"not seen in {timeout_s}s: {seen[-1][2]!r}"
        time.sleep(interval_s)


def _check_flip(seen, flip: datetime.datetime, state_of, before_flip, after_flip) -> None:
    """Every answer read wholly before ``flip`` shows ``before_flip``, every answer read
    wholly after it ``after_flip``."""
    margin = datetime.timedelta(seconds=SETTLE_S)
    for started, ended, answer in seen:
        if ended < flip - margin:
            assert state_of(answer) == before_flip, (started, flip)
        elif started > flip + margin:
            assert state_of(answer) == after_flip, (started, flip)


def test_a_service_goes_down_when_its_heartbeat_ages_past_down_after(replica, reader):
    heartbeat = _utc()
    E.fill_zones(replica, [
        ("cell1", E.service(1, "compute-1", heartbeat=_stamp(heartbeat), down_after=1)),
        ("cell1", E.service(2, "compute-2"))], [])
    flip = heartbeat + datetime.timedelta(seconds=1)

    def services():
        return reader.list_services(None, None, False, False).body

    def detail():
        return reader.availability_zones(True).body

    first = services()
    assert _states(first) == {"compute-1": "up", "compute-2": "up"}
    assert _alive(detail())["compute-1"] is True
    assert services() is first           # kept meanwhile: no commit, no flip yet
    seen = _wait_for(services, lambda b: _states(b)["compute-1"] == "down", 5)
    _check_flip(seen, flip, lambda b: _states(b)["compute-1"], "up", "down")
    assert _states(seen[-1][2])["compute-2"] == "up"
    assert _alive(detail()) == {"compute-1": False, "compute-2": True}
    # and from then on kept again (compute-2 flips in an hour), once the clock is past
    # the flip by more than the margin within which a flip still counts as ahead
    past = flip + datetime.timedelta(days=reader_mod.FLIP_MARGIN_DAYS, seconds=SETTLE_S)
    _wait_for(_utc, lambda now: now > past, 1)
    down = services()
    assert services() is down


def test_a_future_heartbeat_is_up_within_down_after_of_it_then_down(replica, reader):
    """The clocks may disagree: a report from the future is up while it is at most
    down_after ahead, and down again down_after after it."""
    heartbeat = _utc(1.5)
    E.fill_zones(replica, [("cell1", E.service(1, "compute-1", heartbeat=_stamp(heartbeat),
                                               down_after=1))], [])

    def detail():
        return reader.availability_zones(True).body

    def state(body):
        return _alive(body)["compute-1"]

    assert state(detail()) is False
    comes_up = heartbeat - datetime.timedelta(seconds=1)
    seen = _wait_for(detail, lambda b: state(b) is True, 5)
    _check_flip(seen, comes_up, state, False, True)
    goes_down = heartbeat + datetime.timedelta(seconds=1)
    seen = _wait_for(detail, lambda b: state(b) is False, 5)
    _check_flip(seen, goes_down, state, True, False)
    assert _states(reader.list_services(None, None, False, False).body) == {
        "compute-1": "down"}


def test_forced_down_and_ruleless_services_never_expire_the_answer(replica, reader):
    """A forced-down service is down whatever its heartbeat, and one without a liveness
    rule (down_after 0) up: neither bounds the kept answer in time; a service with a
    rule bounds it at its heartbeat + down_after."""
    now = _utc()
    E.fill_zones(replica, [
        ("cell1", E.service(1, "compute-1", heartbeat=_stamp(now), down_after=1,
                            forced_down=True)),
        ("cell1", E.service(2, "compute-2", heartbeat=_stamp(now), down_after=0))], [])
    body = reader.list_services(None, None, False, False).body
    assert _states(body) == {"compute-1": "down", "compute-2": "up"}
    (valid_until,) = {kept[1] for kept in reader._answers.values()}
    assert valid_until is None
    E.fill_kind(replica, "service", "cell1", [
        E.service(3, "compute-3", heartbeat=_stamp(now), down_after=600)])
    reader.list_services(None, None, False, False)
    (valid_until,) = {kept[1] for kept in reader._answers.values()}
    expected = _julian_day(now + datetime.timedelta(seconds=600))
    assert abs(valid_until - expected) * 86400.0 < 0.01


def _julian_day(naive_utc: datetime.datetime) -> float:
    unix = naive_utc.replace(tzinfo=datetime.timezone.utc).timestamp()
    return unix / 86400.0 + 2440587.5


def test_kept_answers_stay_within_their_budget(replica, reader, monkeypatch):
    _fill_every_kind(replica, 20)
    one = len(reader.list_keypairs("u1", False, None, None).body)
    monkeypatch.setattr(reader_mod, "KEPT_ANSWER_BYTES", 3 * one)
    for limit in range(1, 30):
        reader.list_keypairs("u1", False, None, 20 + limit)
        assert reader._answers.bytes <= 3 * one
    assert 1 <= len(reader._answers) <= 3
    # an answer over half the budget is not kept
    monkeypatch.setattr(reader_mod, "KEPT_ANSWER_BYTES", one)
    reader._answers.clear()
    assert reader._answers.bytes == 0
    reader.list_keypairs("u1", False, None, None)
    assert not reader._answers


def test_a_reader_keeps_the_plans_its_statements_were_prepared_with(reader):
    """Without the query planner stability guarantee, SQLite built with STAT4 (apsw's)
    compiles a statement again after every new binding of a parameter compared with an
    indexed column or used as a LIMIT (the hypervisor, key pair and instance action
    lists): a prepare's cost on every read."""
    assert reader.conn.config(apsw.SQLITE_DBCONFIG_ENABLE_QPSG, -1) == 1


def test_a_clock_set_back_builds_a_timed_answer_again(replica, reader):
    """A timed answer is right from the moment it was built: a clock that reads before
    that moment (set back) may see a row on the other side of its flip."""
    E.fill_zones(replica, [("cell1", E.service(1, "compute-1", heartbeat=_stamp(_utc(-5)),
                                               down_after=1))], [])
    first = reader.list_services(None, None, False, False).body
    assert _states(first) == {"compute-1": "down"}
    assert reader.list_services(None, None, False, False).body is first
    (key, (version, valid_until, built_at, answer)), = reader._answers.items()
    assert valid_until is None and built_at is not None
    # as if it had been built a minute from now, and the clock had then been set back
    reader._answers[key] = (version, valid_until, built_at + 60 / 86400.0, answer)
    again = reader.list_services(None, None, False, False).body
    assert again is not first and again == first
    assert reader._answers[key][2] <= built_at + 1 / 86400.0
