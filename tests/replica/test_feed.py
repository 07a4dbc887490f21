"""The feed protocol: round trips, and every kind of refusal with its reason."""

from __future__ import annotations

import copy
import dataclasses
import uuid

import msgpack
import pytest

from replica import feed
from replica.feed import Event, FeedError

SERVER_UUID = str(uuid.UUID(int=1))


def server_entity(**overrides) -> dict:
    values = {name: None for name in feed.SERVER_FIELDS}
    values.update(
        uuid=SERVER_UUID, project_id="demo", user_id="u1", created_at="2026-12-01T00:00:00.000000",
        deleted=False, locked=False, instance_name="instance-00000001", image_properties={},
        flavor={"flavorid": "1", "name": "m1.tiny", "memory_mb": 512, "vcpus": 1, "root_gb": 1,
                "ephemeral_gb": 0, "swap": 0, "extra_specs": {}},
        metadata={}, tags=[], network_info=[], security_groups=[], volumes=[], server_groups=[],
        scheduler_hints={},
    )
    values.update(overrides)
    return values


def flavor_entity(**overrides) -> dict:
    values = {"flavorid": "1", "name": "m1.tiny", "memory_mb": 512, "vcpus": 1, "root_gb": 1,
              "ephemeral_gb": 0, "swap": 0, "rxtx_factor": 1.0, "vcpu_weight": None,
              "disabled": False, "is_public": True, "description": None, "extra_specs": {},
              "projects": [], "created_at": "2026-12-01T00:00:00.000000"}
    values.update(overrides)
    return values


def test_batch_round_trip():
    events = [Event(7, "server", "u", SERVER_UUID, server_entity()),
              Event(8, "flavor", "u", "1", flavor_entity()),
              Event(9, "server", "d", SERVER_UUID, None)]
    decoded = feed.decode_message(feed.encode_batch("cell1", "e" * 32, events))
    assert isinstance(decoded, feed.Batch)
    assert (decoded.cell, decoded.epoch) == ("cell1", "e" * 32)
    # upserts arrive with the hash of the bytes they travelled as
    assert decoded.events == tuple(
        dataclasses.replace(e, entity_hash=feed.entity_hash(e.entity)) if e.entity else e
        for e in events)
    assert (decoded.first_seq, decoded.last_seq) == (7, 9)


def test_heartbeat_round_trip():
    hb = feed.decode_message(feed.encode_heartbeat("cell1", "abc", 10, 3, 1.5))
    assert hb == feed.Heartbeat("cell1", "abc", 10, 3, 1.5)


def _raw_batch(events, **top) -> bytes:
    msg = {"v": feed.FEED_VERSION, "t": "batch", "cell": "cell1", "epoch": "abc",
           "events": events}
    msg.update(top)
    return msgpack.packb(msg)


def _event(seq=1, **over):
    """A wire event; an entity given as a dict is sent as its bytes."""
    ev = {"s": seq, "k": "server", "o": "u", "id": SERVER_UUID, "e": server_entity()}
    ev.update(over)
    if isinstance(ev["e"], dict):
        ev["e"] = feed.entity_bytes(ev["e"])
    return ev


@pytest.mark.parametrize("data, reason", [
    (b"\xc1garbage", "malformed"),
    (msgpack.packb([1, 2, 3]), "malformed"),
    (_raw_batch([_event()])[:-7], "malformed"),
    (_raw_batch([_event()], v=99), "unknown_version"),
    (_raw_batch([dict(_event(), e=server_entity())], v=1), "unknown_version"),
    (_raw_batch([_event()], v=True), "unknown_version"),
    (_raw_batch([_event()], t="nonsense"), "malformed"),
    (_raw_batch([]), "malformed"),
    (_raw_batch([_event()], cell=5), "malformed"),
    (_raw_batch([_event(s="1")]), "malformed"),
    (_raw_batch([_event(k="volume")]), "bad_event"),
    (_raw_batch([_event(o="x")]), "bad_event"),
    (_raw_batch([_event(id="not-a-uuid")]), "bad_event"),
    (_raw_batch([_event(e=None)]), "bad_entity"),
    (_raw_batch([dict(_event(), e=server_entity())]), "bad_entity"),     # a map, not bytes
    (_raw_batch([_event(e=b"{not json")]), "bad_entity"),
    (_raw_batch([_event(e=b"[1, 2]")]), "bad_entity"),
    (_raw_batch([_event(e=feed.entity_bytes(server_entity())[:-9])]), "bad_entity"),
    (_raw_batch([_event(e=server_entity(power_state="on"))]), "bad_entity"),
    (_raw_batch([_event(e=server_entity(progress=True))]), "bad_entity"),
    (_raw_batch([_event(e=server_entity(uuid=str(uuid.UUID(int=2))))]), "bad_entity"),
    (_raw_batch([_event(o="d")]), "bad_event"),
    (_raw_batch([_event(1), _event(3)]), "bad_event"),
    (_raw_batch([_event(0)]), "bad_event"),
])
def test_refusals_carry_a_reason(data, reason):
    with pytest.raises(FeedError) as err:
        feed.decode_message(data)
    assert err.value.reason == reason


def test_missing_entity_field_is_refused():
    entity = server_entity()
    del entity["host"]
    with pytest.raises(FeedError, match="missing fields \\['host'\\]"):
        feed.decode_message(_raw_batch([_event(e=entity)]))


def test_flavor_of_server_is_checked():
    entity = server_entity()
    entity["flavor"] = dict(entity["flavor"], vcpus="1")
    with pytest.raises(FeedError) as err:
        feed.decode_message(_raw_batch([_event(e=entity)]))
    assert err.value.reason == "bad_entity"


def test_oversized_is_refused_before_decoding():
    with pytest.raises(FeedError) as err:
        feed.decode_message(b"\x00" * 100, max_bytes=99)
    assert err.value.reason == "oversized"


def test_entity_hash_is_the_hash_of_the_wire_bytes_and_sees_changes():
    a = server_entity(metadata={"a": "1", "b": "2"})
    b = copy.deepcopy(a)
    b["metadata"] = {"b": "2", "a": "1"}       # Nova would show this order: a change
    assert feed.entity_hash(a) == feed.hash_bytes(feed.entity_bytes(a))
    assert feed.entity_hash(a) != feed.entity_hash(b)
    assert feed.entity_hash(a) != feed.entity_hash(server_entity(metadata={"a": "1"}))
    assert 0 <= feed.entity_hash(a) < 2 ** 32


def test_entity_bytes_are_the_json_modules_compact_form():
    import json
    entity = server_entity(metadata={"z": "ünï \" \\ \n \x01 \u2028 😀",
                                     "a": [1, 2.5, None, True]},
                           scheduler_hints={"big": 2 ** 70}, image_properties={"n": -3, "f": 1e20})
    with_int_key = server_entity(metadata={1: "a"})
    for e in (entity, with_int_key, flavor_entity()):
        assert feed.entity_bytes(e) == json.dumps(
            e, separators=(",", ":"), ensure_ascii=False).encode()


def test_an_accepted_shape_does_not_let_a_bad_entity_through():
    good = server_entity()
    feed.validate_entity("server", SERVER_UUID, good)     # remembered as a good shape
    feed.validate_entity("server", SERVER_UUID, dict(good))
    bad = [(dict(good, power_state=True), "field 'power_state' has type bool"),
           (dict(good, progress=1.5), "field 'progress' has type float"),
           (dict(good, uuid=str(uuid.UUID(int=2))), "does not match the key"),
           ({k: v for k, v in good.items() if k != "host"}, "missing fields \\['host'\\]"),
           (dict(good, flavor=dict(good["flavor"], swap=None)), "flavor: field 'swap'"),
           (dict(good, flavor={k: v for k, v in good["flavor"].items() if k != "name"}),
            "flavor: missing fields")]
    for entity, message in bad:
        with pytest.raises(FeedError, match=message):
            feed.validate_entity("server", SERVER_UUID, entity)
    feed.validate_entity("flavor", "1", flavor_entity())
    with pytest.raises(FeedError, match="flavorid does not match"):
        feed.validate_entity("flavor", "2", flavor_entity())
    with pytest.raises(FeedError, match="field 'disabled' has type int"):
        feed.validate_entity("flavor", "1", flavor_entity(disabled=0))


def test_keys_in_other_uuid_spellings_are_still_accepted():
    spelled = "{" + SERVER_UUID.replace("-", "").upper() + "}"
    events = feed.decode_events([_event(1, id=spelled, e=server_entity(uuid=spelled))])
    assert events[0].key == spelled


def test_buckets_are_stable_and_in_range():
    keys = [str(uuid.UUID(int=i)) for i in range(2000)]
    buckets = {feed.bucket_of(k) for k in keys}
    assert all(0 <= b < feed.DIGEST_BUCKETS for b in buckets)
    assert len(buckets) > feed.DIGEST_BUCKETS * 0.9
    assert feed.bucket_of(keys[0]) == feed.bucket_of(keys[0])


def test_control_round_trip_and_errors():
    op, args = feed.decode_request(feed.encode_request("replay", epoch="e", **{"from": 5}, limit=10))
    assert (op, args) == ("replay", {"epoch": "e", "from": 5, "limit": 10})
    with pytest.raises(FeedError):
        feed.decode_request(msgpack.packb({"v": feed.FEED_VERSION, "op": "replay"}))
    with pytest.raises(FeedError):
        feed.decode_request(msgpack.packb({"v": feed.FEED_VERSION, "op": "drop_tables"}))
    assert feed.decode_reply("hello", feed.encode_reply(head=3))["head"] == 3
    with pytest.raises(feed.ControlError) as err:
        feed.decode_reply("replay", feed.encode_error("retention", "too old", oldest=40))
    assert err.value.error == "retention" and err.value.reply["oldest"] == 40
