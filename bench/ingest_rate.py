"""Ingest rate: server upserts per second through the appliance's real ingest path.

Entities are built from a populated cell database the way the publisher builds them
(the joins; outside the timing) and encoded into feed batches as the publisher sends
them (timed separately: that is the cell side's work), with the row of each key's last
upsert rendered by the publisher (``replica.cell.prerender``; ``rendered=False``: entities
only, as a publisher of another render version sends them). Then, timed, each message
goes through ``replica.ingest.Ingest.on_message`` exactly as a message from a SUB socket
does: decoded (``replica.feed``), checked against the feed's position, each pre-rendered
row checked (``Writer.row_problem``) or, without one, the entity decoded, validated and
rendered into its replica row (``replica.render``), and group-committed with the
position (``Ingest.commit`` -> ``Writer.apply``) into a fresh replica database. Only the
socket is left out: PUB/SUB delivery is what the lag scenario measures.

With ``held`` the replica already holds that many other servers when the timed part
begins (rows rendered from the cell's entities under new uuids, owned by another feed):
what an update costs depends on the replica's size (on a 10,000-server replica a group
of 5,000 updates dirties its pages several rows at a time, on a large one each update a
page of its own), and a cloud's replica is not empty.

With ``key_file`` the messages are sealed as a publisher with that key file seals them
(timed apart, as the encoding is) and ingest's feed has the same key file: each
message is opened (authenticated and decrypted) before it is decoded. The runner
measures both ways, so the cost of a sealed feed per event is the difference.
"""

from __future__ import annotations

import gc
import os
import shutil
import time

CELL = "bench"
EPOCH = "b" * 32


def _entities(cell_path: str, limit: int) -> list[dict]:
    from replica.cell.connection import open_cell_reader
    from replica.cell.entity import build_servers

    conn = open_cell_reader(cell_path)
    try:
        with conn:
            uuids = [u for (u,) in conn.execute(
                "SELECT uuid FROM instances ORDER BY id LIMIT ?", (limit,))]
            built = build_servers(conn, uuids)
    finally:
        conn.close()
    return [e for e in built.values() if e is not None]


def _messages(entities: list[dict], events: int, batch: int, rendered: bool) -> list[bytes]:
    from replica import feed
    from replica.cell import prerender

    messages = []
    seq = 0
    while seq < events:
        chunk = []
        for _ in range(min(batch, events - seq)):
            entity = entities[seq % len(entities)]
            seq += 1
            chunk.append(feed.Event(seq, feed.KIND_SERVER, feed.OP_UPSERT, entity["uuid"], entity))
        if rendered:
            messages.append(feed.encode_batch(CELL, EPOCH, prerender.with_rows(CELL, chunk),
                                              prerender.RENDER_VERSION))
        else:
            messages.append(feed.encode_batch(CELL, EPOCH, chunk))
    return messages


HELD_FEED = "held"          # the owner of the servers a replica holds before the run
HELD_GROUP = 5000


def _fresh(path: str, template: str | None = None) -> None:
    """No replica at ``path``, or a copy of the replica ``template``."""
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(path + suffix):
            os.remove(path + suffix)
    if template is not None:
        shutil.copyfile(template, path)


def _held_replica(path: str, entities: list[dict], held: int) -> None:
    """A new replica at ``path`` holding ``held`` servers of another feed, rendered from
    ``entities`` under new uuids, its WAL copied back into the file."""
    _fresh(path)
    import random
    import uuid

    from replica import feed, render
    from replica.store import connection
    from replica.store.writer import Change, Writer

    pick = random.Random(held)
    conn = connection.open_writer(path)
    try:
        writer = Writer(conn, render.SERVER_COLUMNS, render.FLAVOR_COLUMNS)
        for start in range(0, held, HELD_GROUP):
            group = []
            for n in range(start, min(held, start + HELD_GROUP)):
                key = str(uuid.UUID(int=pick.getrandbits(128), version=4))
                entity = dict(entities[n % len(entities)], uuid=key)
                group.append(Change(feed.KIND_SERVER, key, HELD_FEED,
                                    render.server_row(HELD_FEED, n + 1, entity)))
            writer.apply(group)
            connection.checkpoint_passive(conn)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def _breakdown(messages: list[bytes], path: str, sealer=None, template: str | None = None
               ) -> dict:
    """CPU microseconds per upsert of each stage, run apart after the timed run with
    the functions ingest calls, the way it calls them (a message's envelope decoded,
    then entity by entity: opened, i.e. decoded and validated, and rendered, or its
    pre-rendered row checked; rows written in groups): where the time goes, not a
    second figure. The render is the difference between a pass that opens and renders
    and one that only opens. With a ``sealer`` the messages are sealed and ``unseal``
    is opening each one (authenticate and decrypt) before its envelope is decoded.
    ``template``: the replica to start from (see ``_held_replica``), else a new one."""
    from replica import feed, render
    from replica.store import connection
    from replica.store.writer import Change, Writer

    _fresh(path, template)
    conn = connection.open_writer(path)
    envelope = opened = opened_rendered = written = unsealed = checked = 0.0
    upserts = 0
    try:
        writer = Writer(conn, render.SERVER_COLUMNS, render.FLAVOR_COLUMNS)
        group: list[Change] = []
        for i, data in enumerate(messages):
            with feed.gc_paused():
                if sealer is not None:
                    began = time.process_time()
                    data = sealer.open_feed(data)
                    unsealed += time.process_time() - began
                began = time.process_time()
                batch = feed.decode_message(data, entities=False)
                envelope += time.process_time() - began
                # As ingest: only the last event of a key is used (its row, if any).
                last = list({e.key: e for e in batch.events}.values())
                usable = batch.render_version == render.RENDER_VERSION
                plain = [e for e in last if not (usable and e.row is not None)]
                began = time.process_time()
                for e in last:
                    if usable and e.row is not None:
                        if writer.row_problem(e.kind, e.key, CELL, e.seq, e.entity_hash, e.row):
                            raise RuntimeError(f"bench: row of seq {e.seq} refused")
                        group.append(Change(feed.KIND_SERVER, e.key, CELL, e.row))
                checked += time.process_time() - began
                began = time.process_time()
                for e in plain:
                    feed.open_entity(e.kind, e.key, e.entity, "bench")
                opened += time.process_time() - began
                began = time.process_time()
                group += [Change(feed.KIND_SERVER, e.key, CELL, render.server_row(
                    CELL, e.seq, feed.open_entity(e.kind, e.key, e.entity, "bench"),
                    e.entity_hash)) for e in plain]
                opened_rendered += time.process_time() - began
            upserts += len(batch.events)
            del batch
            if len(group) >= 5000 or i == len(messages) - 1:
                began = time.process_time()
                writer.apply(group)
                written += time.process_time() - began
                group = []
    finally:
        conn.close()
    n = max(1, upserts)
    stages = {"unseal": unsealed / n * 1e6} if sealer is not None else {}
    return {**stages, "envelope": envelope / n * 1e6, "row_check": checked / n * 1e6,
            "decode_validate": opened / n * 1e6,
            "render": (opened_rendered - opened) / n * 1e6, "sqlite_upsert": written / n * 1e6}


def measure(cell_path: str, workdir: str, events: int, batch: int,
            key_file: str | None = None, rendered: bool = True, held: int = 0) -> dict:
    """``rendered``: the publisher sends pre-rendered rows (as it does); False: entities
    only (as a publisher of another render version: the appliance renders). ``held``:
    servers of another feed the replica holds before the run (see the module's doc)."""
    from appliance import memory
    from replica.ingest import CellFeed, Ingest, IngestConfig
    from replica.position import Position
    from replica.states import CellState

    entities = _entities(cell_path, events)
    if not entities:
        raise RuntimeError(f"no servers in {cell_path}")
    began = time.perf_counter()
    messages = _messages(entities, events, batch, rendered)
    encode_s = time.perf_counter() - began
    seal_s = 0.0
    sealer = None
    if key_file:
        from replica.key_file import sealer_for
        sealer = sealer_for(CELL, key_file)
        began = time.process_time()     # CPU time: what sealing costs the publisher
        messages = [sealer.seal_feed(data) for data in messages]
        seal_s = time.process_time() - began
    template = None
    held_s = 0.0
    if held:
        template = os.path.join(workdir, f"ingest-held-{held}.db")
        began = time.perf_counter()
        _held_replica(template, entities, held)
        held_s = time.perf_counter() - began
    # The entities are this harness's, not ingest's: freed, so that the collector's
    # passes during the timed part walk only what a running ingest process holds.
    del entities
    gc.collect()

    path = os.path.join(workdir, "ingest-rate.db")
    _fresh(path, template)
    config = IngestConfig(replica_path=path, control_url=f"ipc://{workdir}/ingest-rate.ctl",
                          cells=[CellFeed(CELL, f"ipc://{workdir}/unused.feed",
                                          f"ipc://{workdir}/unused.ctl", key_file)])
    ingest = Ingest(config)
    try:
        link = ingest.links[CELL]
        link.position = Position(CELL, EPOCH, 0)   # as after a hello: apply from seq 1
        link.set_state(CellState.CATCHING_UP, "benchmark")
        # The ingest process runs with a serving process's memory tuning
        # (appliance.children.IngestChild): the same here, for the timed part only.
        thresholds = gc.get_threshold()
        memory.tune_serving_process()
        began = time.perf_counter()
        cpu_began = time.process_time()
        try:
            for data in messages:
                ingest.on_message(link, data)
            ingest.commit()
        finally:
            seconds = time.perf_counter() - began
            cpu_s = time.process_time() - cpu_began
            gc.unfreeze()
            gc.set_threshold(*thresholds)
        applied = ingest.events_applied
        groups = ingest.batches_committed
        dead = ingest.dead_total
        rows = ingest.conn.execute("SELECT count(*) FROM servers WHERE cell = ?",
                                   (CELL,)).fetchall()[0][0]
        position = ingest.writer.load_positions().get(CELL)
    finally:
        ingest.close()
    if applied != events or dead:
        raise RuntimeError(f"ingest applied {applied} of {events} events ({dead} dead letters)")
    breakdown = _breakdown(messages, path, sealer if key_file else None, template)
    if template is not None:
        _fresh(template)
    return {"events": applied, "cpu_us_per_upsert": breakdown, "distinct_servers": rows, "messages": len(messages),
            "batch_events": batch, "group_commits": groups,
            "group_commit_max": config.group_commit_max, "position_seq": position.seq if position else None,
            "seconds": seconds, "upserts_per_s": applied / seconds if seconds else None,
            # On a busy machine the wall-clock rate is the share of a core ingest got:
            # the rate its own CPU time allows is what it would do on a core of its own.
            "cpu_s": cpu_s, "upserts_per_cpu_s": applied / cpu_s if cpu_s else None,
            "encode_s": encode_s, "encode_per_s": events / encode_s if encode_s else None,
            "sealed": bool(key_file), "rendered": rendered, "seal_cpu_s": seal_s,
            "seal_us_per_event": seal_s / events * 1e6 if key_file else None,
            "message_bytes_mean": sum(map(len, messages)) / len(messages),
            "held_servers": held, "held_load_s": held_s}
