"""Cell-side timings: entity build in snapshot pages, control replies, replay
pages, digests, by hand (not part of ``make bench``):

    .venv/bin/python -m bench.cell_side --db /tmp/cellbench/cell100k.db \
        --make 100000 --churn 5000

``--make N`` creates and fills the database first when it does not exist
(``--churn`` lifecycle operations afterwards give deleted rows, faults, resizes).
Times are CPU seconds of this process (``process_time``) and wall seconds.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from replica import feed  # noqa: E402
from replica.cell import connection, control, entity, outbox, simulator, sqlite_source  # noqa: E402,E501


class _Timer:
    def __init__(self, label: str, count: int | None = None):
        self.label, self.count = label, count

    def __enter__(self):
        gc.collect()
        self.cpu, self.wall = time.process_time(), time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.cpu = time.process_time() - self.cpu
        self.wall = time.perf_counter() - self.wall
        per = ""
        if self.count:
            per = f"  {self.cpu / self.count * 1e6:7.1f} us CPU each"
        print(f"{self.label:<44} {self.wall:7.2f} s wall {self.cpu:7.2f} s CPU{per}", flush=True)
        return False


def make(db: str, servers: int, churn: int) -> None:
    print(f"creating {db}: {servers} servers, {churn} churn operations", flush=True)
    outbox.init_cell_db(db, "bench")
    simulator.populate(db, servers, 20, seed=1)
    if churn:
        simulator.run_simulator(simulator.SimulatorConfig(db, 0, servers, 20, ops=churn, seed=1))


def _server(db: str, kinds: list[str]) -> control.ControlServer:
    conn = connection.open_cell_reader(db)
    epoch = outbox.epoch_of(conn)
    conn.close()
    server = control.ControlServer(db, "bench", epoch, kinds, None, threading.Event())
    server.open()
    return server


def _pager(control_url: str, stop) -> None:
    """A requester paging through snapshots, 1000 items a page, until ``stop``."""
    import nanomsg
    ctl = nanomsg.Socket(nanomsg.REQ)
    ctl.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVMAXSIZE, -1)
    ctl.connect(control_url)
    while not stop.is_set():
        ctl.send(feed.encode_request("snapshot_begin"))
        snap = feed.decode_reply("snapshot_begin", ctl.recv())["snapshot"]
        after = None
        while not stop.is_set():
            ctl.send(feed.encode_request("snapshot_page", snapshot=snap, after=after,
                                         limit=1000))
            reply = feed.decode_reply("snapshot_page", ctl.recv())
            if reply["done"]:
                break
            after = reply["items"][-1][:2]
        ctl.send(feed.encode_request("snapshot_end", snapshot=snap))
        ctl.recv()


def _writer(db: str, rate: int, seconds: float, go, done) -> None:
    """``rate`` events/s: commits of 10 display_name updates stamped with the time."""
    conn = connection.open_cell(db)
    uuids = [u for (u,) in conn.execute("SELECT uuid FROM instances WHERE deleted = 0 "
                                        "LIMIT 1000")]
    go.wait()
    interval, i = 10 / rate, 0
    end = time.monotonic() + seconds
    next_at = time.monotonic()
    while time.monotonic() < end:
        with conn:
            for _ in range(10):
                conn.execute("UPDATE instances SET display_name = ? WHERE uuid = ?",
                             (f"lat-{time.time():.6f}", uuids[i % len(uuids)]))
                i += 1
        next_at += interval
        time.sleep(max(0.0, next_at - time.monotonic()))
    conn.close()
    done.put(i)


def latency(db: str, seconds: float, rate: int, control_thread: bool, paging: bool) -> None:
    """Commit-to-published latency of the live feed at ``rate`` events/s, with a
    requester paging through snapshots meanwhile if ``paging``. Writer, pager and
    subscriber are separate processes (none waits for another's GIL)."""
    import multiprocessing
    import subprocess
    import tempfile

    context = multiprocessing.get_context("fork")
    directory = tempfile.mkdtemp(prefix="cellbench-")
    feed_url, control_url = f"ipc://{directory}/feed", f"ipc://{directory}/control"
    go, stop, done = context.Event(), context.Event(), context.Queue()
    writer = context.Process(target=_writer, args=(db, rate, seconds, go, done), daemon=True)
    pager = context.Process(target=_pager, args=(control_url, stop), daemon=True)
    writer.start()
    argv = [sys.executable, "-m", "replica.cell.publisher", "--db", db, "--name", "bench",
            "--feed", feed_url, "--control", control_url]
    proc = subprocess.Popen(argv + (["--control-thread"] if control_thread else []), cwd=ROOT,
                            stderr=subprocess.DEVNULL)
    import nanomsg
    seen: list[float] = []
    try:
        ctl = nanomsg.Socket(nanomsg.REQ)
        ctl.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVMAXSIZE, -1)
        ctl.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, 120_000)
        ctl.connect(control_url)
        ctl.send(feed.encode_request("digest"))     # returns once the hash cache is warm
        feed.decode_reply("digest", ctl.recv())
        ctl.close()
        if paging:
            pager.start()
            time.sleep(1.0)
        sub = nanomsg.Socket(nanomsg.SUB)
        sub.set_string_option(nanomsg.SUB, nanomsg.SUB_SUBSCRIBE, b"")
        sub.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVMAXSIZE, -1)
        sub.set_int_option(nanomsg.SOL_SOCKET, nanomsg.RCVTIMEO, 2000)
        sub.connect(feed_url)
        time.sleep(0.5)
        go.set()
        end = time.monotonic() + seconds + 2.0
        while time.monotonic() < end:
            try:
                message = feed.decode_message(sub.recv())
            except nanomsg.NanoMsgAPIError:
                continue
            now = time.time()
            for event in getattr(message, "events", ()):
                name = (event.entity or {}).get("display_name") or ""
                if name.startswith("lat-"):
                    seen.append(now - float(name[4:]))
        written = done.get(timeout=30)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(10)
        for child in (writer, pager):
            if child.is_alive() or child.exitcode is None and child.pid:
                child.join(5)
    seen.sort()
    if seen:
        pct = lambda q: seen[min(len(seen) - 1, int(q * len(seen)))] * 1e3  # noqa: E731
        print(f"feed latency, control in a {'thread' if control_thread else 'process'}, "
              f"{'while paging' if paging else 'no paging'}: {len(seen)}/{written} events, "
              f"p50 {pct(0.5):.1f} ms, p99 {pct(0.99):.1f} ms, max {seen[-1] * 1e3:.1f} ms",
              flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", required=True)
    parser.add_argument("--make", type=int, default=0, metavar="N")
    parser.add_argument("--churn", type=int, default=0)
    parser.add_argument("--page", type=int, default=1000, help="items per snapshot page "
                        "(the appliance asks 1000)")
    parser.add_argument("--replay", type=int, default=5000, help="events asked per replay "
                        "(the appliance asks 5000)")
    parser.add_argument("--skip-digest", action="store_true")
    parser.add_argument("--latency", type=float, metavar="SECONDS",
                        help="instead: the live feed's commit-to-published latency while a "
                        "requester pages through snapshots (control as a process and as a "
                        "thread), then exit")
    parser.add_argument("--rate", type=int, default=2000, help="events/s for --latency")
    args = parser.parse_args(argv)
    if not os.path.exists(args.db):
        if not args.make:
            parser.error(f"{args.db} does not exist (pass --make N)")
        make(args.db, args.make, args.churn)

    if args.latency:
        for control_thread in (True, False):
            for paging in (False, True):
                latency(args.db, args.latency, args.rate, control_thread, paging)
        return 0

    conn = connection.open_cell_reader(args.db)
    kinds = sqlite_source.kinds_of(conn)
    conn.execute("BEGIN")
    total = entity.count_entities(conn, kinds)
    head = outbox.outbox_head(conn)
    print(f"{args.db}: {total} entities, outbox head {head}, page {args.page}")

    # Warm the page cache so the first measurement is not a disk read.
    for _ in entity.page_keys(conn, kinds, None, total + 1):
        pass

    with _Timer(f"page_entities, all ({args.page}/page)", total):
        after, n = None, 0
        while True:
            items, after = entity.page_entities(conn, kinds, after, args.page)
            n += len(items)
            if after is None:
                break
    conn.execute("ROLLBACK")

    server = _server(args.db, kinds)
    begin = feed.decode_reply("snapshot_begin",
                              server.handle(feed.encode_request("snapshot_begin")))
    after, replies, size, served = None, 0, 0, 0.0
    wall = time.perf_counter()
    while True:
        cpu = time.process_time()
        data = server.handle(feed.encode_request("snapshot_page", snapshot=begin["snapshot"],
                                                 after=after, limit=args.page))
        served += time.process_time() - cpu
        size += len(data)
        replies += 1
        reply = feed.decode_reply("snapshot_page", data)      # the requester's part
        if reply["done"]:
            break
        after = reply["items"][-1][:2]
    wall = time.perf_counter() - wall
    print(f"{'snapshot_page replies, all (server side)':<44} {'':>14} {served:7.2f} s CPU"
          f"  {served / total * 1e6:7.1f} us CPU each")
    print(f"  {replies} replies, {size / 1e6:.0f} MB, {wall:.2f} s wall with the decoding")
    server.handle(feed.encode_request("snapshot_end", snapshot=begin["snapshot"]))

    start = max(1, head - args.replay + 1)
    with _Timer(f"replay reply, {args.replay} events", args.replay):
        reply = feed.decode_reply("replay", server.handle(feed.encode_request(
            "replay", epoch=server.epoch, **{"from": start}, limit=args.replay)))
    print(f"  {len(reply['events'])} events in the reply")

    if not args.skip_digest:
        with _Timer("digest, cold (every entity)", total):
            server.handle(feed.encode_request("digest"))
        with _Timer("digest, warm (no change)"):
            server.handle(feed.encode_request("digest"))
        fresh = _server(args.db, kinds)
        with _Timer("digest, fresh server (restart)", total):
            fresh.handle(feed.encode_request("digest"))
        fresh.close()
    server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
