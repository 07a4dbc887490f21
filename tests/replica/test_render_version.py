"""The render's version is pinned to its output: a publisher's pre-rendered rows are
stored as they came by an appliance of the same ``render.RENDER_VERSION``, so a change
of any row function's output or column tuple must come with a new version. When this
test fails after a change to ``replica.render``: give RENDER_VERSION a new value and
record the new digest here, with it."""

import zlib

import msgpack

from replica import feed, render
from replica.kinds import KINDS, renderers

# RENDER_VERSION -> the digest of the sample rows below (add a line per new version)
PINNED = {
    "1": 3172072911,
    "2": 3729412021,        # hypervisors, services (zones too), aggregates, server groups
    "3": 1991610219,        # a server's ips: its fixed addresses only
}


def _value(name: str, types: tuple, i: int):
    if str in types:
        return f"{name}-{i}"
    if bool in types:
        return i % 2 == 0
    if int in types:
        return i + 3
    if float in types:
        return 1.5
    if dict in types:
        return {}
    if list in types:
        return []
    return None


def _entity(kind: feed.FeedKind, key: str, i: int) -> dict:
    entity = {name: _value(name, types, i) for name, types in kind.fields.items()}
    for name, fields in kind.nested:
        entity[name] = {n: _value(n, t, i) for n, t in fields.items()}
    for name, fields in kind.lists:
        entity[name] = [{n: _value(n, t, j) for n, t in fields.items()} for j in range(2)]
    entity[kind.key_field] = key
    return entity


def _samples() -> dict[str, list[dict]]:
    out = {}
    for name, kind in feed.FEED_KINDS.items():
        keys = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(3)] \
            if kind.uuid_key else [f"{name}/{i}" for i in range(3)]
        entities = [_entity(kind, key, i) for i, key in enumerate(keys)]
        if name == feed.KIND_SERVER:
            entities[0].update(
                vm_state="active", host="h1", metadata={"b": "2", "a": "1"}, tags=["t"],
                network_info=[{"address": "fa:16:3e:00:00:01", "network": {
                    "label": "net", "subnets": [{"cidr": "10.0.0.0/24", "version": 4, "ips": [
                        {"address": "10.0.0.5", "type": "fixed", "version": 4,
                         "floating_ips": [{"address": "172.24.4.9", "type": "floating",
                                           "version": 4}]}]}]}}],
                volumes=[{"id": "v1", "delete_on_termination": True}],
                fault={"code": 500, "message": "boom", "details": "trace",
                       "created": "2026-12-01T07:00:00.000000"},
                image_ref="img-1", image_properties={"os_distro": "cirros"})
            entities[1].update(vm_state="building", deleted=True)
        for entity in entities:
            feed.validate_entity(name, entity[kind.key_field], entity)
        out[name] = entities
    return out


def _digest() -> int:
    declared = renderers(render)
    rows = []
    for name, entities in _samples().items():
        columns, row_of = declared[name]
        rows.append(list(columns))
        for seq, entity in enumerate(entities, start=1):
            rows.append(list(row_of("c1", seq, entity)))
    return zlib.crc32(msgpack.packb(rows, use_bin_type=True))


def test_every_kind_has_samples():
    assert set(_samples()) == set(KINDS)


def test_the_render_version_is_pinned_to_the_rows_it_makes():
    digest = _digest()
    assert render.RENDER_VERSION in PINNED, (
        f"RENDER_VERSION {render.RENDER_VERSION!r} is not pinned: add it with {digest}")
    assert PINNED[render.RENDER_VERSION] == digest, (
        f"the render's rows changed (digest {digest}) but RENDER_VERSION is still "
        f"{render.RENDER_VERSION!r}: give it a new value and pin it with {digest}")
