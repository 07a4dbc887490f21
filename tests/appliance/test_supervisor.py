"""The process model with real processes and real HTTP: serving, replacing dead and
silent workers, graceful stop, rolling reload, orphans, boot failures."""

from __future__ import annotations

import os
import signal
import socket
from concurrent.futures import ThreadPoolExecutor

from appliance.states import InvalidTransition, ProcessEvent, ProcessState, transition
from tests.appliance.conftest import (alive, free_port, get, read_table, start_process,
                                      under_load, wait_for, worker_pids, PYTHON)


def test_workers_serve_and_share_connections(trivial):
    running = trivial(workers=2)
    pids = worker_pids(running.data_dir)
    answered = [int(get(running.port)[1]) for _ in range(60)]
    assert set(answered) <= pids
    # SO_REUSEPORT per worker: fresh connections reach both workers.
    assert set(answered) == pids
    table = read_table(running.data_dir)
    assert table["supervisor"]["pid"] == running.proc.pid
    assert {p["name"] for p in table["processes"]} == {"worker 1", "worker 2"}
    assert all(p["restarts"] == 0 for p in table["processes"])


def test_killed_worker_is_replaced_while_the_other_serves(trivial):
    running = trivial(workers=2)
    victim, survivor = sorted(worker_pids(running.data_dir))
    # Several clients with short timeouts: a connection the kernel had queued on the
    # killed worker may hang until its client gives up; the others go on meanwhile.
    with under_load(running.port, 3, 20, timeout=2.0) as results:
        os.kill(victim, signal.SIGKILL)
        mark = len(results)
        wait_for(lambda: victim not in worker_pids(running.data_dir)
                 and len(worker_pids(running.data_dir)) == 2, timeout=10,
                 what="replacement worker")
        replacement = (worker_pids(running.data_dir) - {survivor}).pop()
        wait_for(lambda: any(ok and int(body) == replacement for ok, body in results[mark:]),
                 timeout=20, what="replacement serving")
    after = results[mark:]
    assert sum(ok for ok, _ in after) > 10
    assert any(ok and int(body) == survivor for ok, body in after)
    # Only connections the kernel had already queued on the dead worker can fail.
    assert sum(not ok for ok, _ in after) <= 10
    slot = [p for p in read_table(running.data_dir)["processes"] if p["pid"] == replacement]
    assert slot[0]["restarts"] == 1


def test_sigterm_lets_in_flight_requests_finish(trivial):
    running = trivial(workers=2)
    with ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(get, running.port, "/slow?s=1.5") for _ in range(6)]
        wait_for(lambda: len([n for n in os.listdir(running.data_dir)
                              if n.startswith("inflight-")]) == 6, what="requests in flight")
        children = running.remember_children()
        running.proc.send_signal(signal.SIGTERM)
        answers = [f.result(timeout=20) for f in futures]
    assert [status for status, _, _ in answers] == [200] * 6
    assert running.proc.wait(timeout=20) == 0
    wait_for(lambda: not any(alive(pid) for pid in children), what="children gone")
    # The listener is closed: new connections are refused.
    try:
        get(running.port, timeout=2)
        refused = False
    except OSError:
        refused = True
    assert refused


def test_sighup_replaces_every_worker_without_a_failed_request(trivial):
    running = trivial(workers=2)
    before = worker_pids(running.data_dir)
    with under_load(running.port, 3, 30) as results:
        running.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not (worker_pids(running.data_dir) & before)
                 and len(worker_pids(running.data_dir)) == 2
                 and "reload_finished" in running.log(), timeout=20, what="workers replaced")
        after = worker_pids(running.data_dir)
        mark = len(results)
        try:
            wait_for(lambda: after <= {int(b) for ok, b in results[mark:] if ok},
                     timeout=20, what="new workers serving")
        except AssertionError:
            seen = {b for ok, b in results[mark:]}
            raise AssertionError(f"new workers {after} not all seen; {len(results) - mark} "
                                 f"answers since, from {seen}\n{running.log()}") from None
    failures = [detail for ok, detail in results if not ok]
    assert failures == [], running.log()
    assert len(results) > 60


def test_sigkill_of_the_supervisor_leaves_no_child(trivial):
    running = trivial(workers=2)
    children = running.remember_children()
    assert len(children) == 2
    running.proc.kill()
    running.proc.wait()
    wait_for(lambda: not any(alive(pid) for pid in children), timeout=10,
             what="children gone after SIGKILL of the supervisor")


def test_silent_worker_is_aborted_and_replaced(trivial):
    running = trivial(workers=1, APPLIANCE_WORKER_TIMEOUT="1")
    (worker,) = worker_pids(running.data_dir)
    os.kill(worker, signal.SIGSTOP)  # alive but silent: no heartbeat
    try:
        wait_for(lambda: worker_pids(running.data_dir) and
                 worker not in worker_pids(running.data_dir), timeout=15,
                 what="silent worker replaced")
    finally:
        if alive(worker):
            os.kill(worker, signal.SIGKILL)
    # Its listener closes as it dies: a connection made during the close can be refused.
    wait_for(lambda: not alive(worker), timeout=10, what="the silent worker gone")
    assert "worker_timeout" in running.log()
    status, body, _ = get(running.port)
    assert status == 200 and int(body) != worker


def test_boot_failure_halts_instead_of_looping(trivial):
    running = trivial(workers=2, wait=False, TEST_BOOT_FAIL="1")
    assert running.proc.wait(timeout=20) == 3
    log = running.log()
    assert "boot_failed" in log and "supervisor_halted" in log
    assert log.count("event=spawned") <= 3  # halted, not restarted in a loop
    running.remember_children()
    assert not any(alive(pid) for pid in running.seen_children)


def test_ttin_and_ttou_change_the_worker_count(trivial):
    running = trivial(workers=1)
    running.proc.send_signal(signal.SIGTTIN)
    wait_for(lambda: len(worker_pids(running.data_dir)) == 2, what="a second worker")
    running.remember_children()
    running.proc.send_signal(signal.SIGTTOU)
    wait_for(lambda: len(worker_pids(running.data_dir)) == 1, what="back to one worker")


def test_busy_listen_address_fails_at_start_with_one_line(tmp_path):
    port = free_port()
    holder = socket.socket()
    holder.bind(("127.0.0.1", port))
    holder.listen()
    try:
        running = start_process([PYTHON, "-m", "appliance", "serve"],
                                {"APPLIANCE_DATA_DIR": str(tmp_path / "d"),
                                 "APPLIANCE_LISTEN_PORT": str(port),
                                 "APPLIANCE_ADMIN_PORT": str(free_port())}, tmp_path)
        assert running.proc.wait(timeout=20) == 1
    finally:
        holder.close()
    lines = running.log().strip().splitlines()
    assert len(lines) == 1, lines
    assert f"127.0.0.1:{port}" in lines[0] and "Address already in use" in lines[0]


def test_process_state_transitions():
    state = transition(ProcessState.BOOTING, ProcessEvent.READY)
    assert state is ProcessState.RUNNING
    assert transition(state, ProcessEvent.STOP) is ProcessState.DRAINING
    assert transition(ProcessState.DRAINING, ProcessEvent.EXIT) is ProcessState.EXITED
    try:
        transition(ProcessState.EXITED, ProcessEvent.READY)
        raised = False
    except InvalidTransition:
        raised = True
    assert raised


def test_a_second_appliance_on_the_same_port_is_refused(trivial):
    first = trivial(workers=1)
    second = trivial(workers=1, wait=False, APPLIANCE_LISTEN_PORT=str(first.port))
    assert second.proc.wait(timeout=20) == 1
    assert "Address already in use" in second.log()
    assert get(first.port)[0] == 200


def keepalive_loop(port: int, stop, results: list):
    """Requests on one kept-alive connection, reconnecting (as clients do) when the
    server answered ``Connection: close``."""
    import http.client
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        while not stop.is_set():
            try:
                conn.request("GET", "/")
                response = conn.getresponse()
                body = response.read()
                results.append((response.status == 200, body.strip()))
            except (OSError, http.client.HTTPException) as exc:
                results.append((False, repr(exc)))
                conn.close()
    finally:
        conn.close()


def test_sighup_with_kept_alive_connections_fails_no_request(trivial):
    running = trivial(workers=2)
    before = worker_pids(running.data_dir)
    with under_load(running.port, 4, 40, loop=keepalive_loop) as results:
        running.proc.send_signal(signal.SIGHUP)
        wait_for(lambda: not (worker_pids(running.data_dir) & before)
                 and "reload_finished" in running.log(), timeout=20, what="workers replaced")
        after = worker_pids(running.data_dir)
        mark = len(results)
        wait_for(lambda: {int(b) for ok, b in results[mark:] if ok} & after, timeout=10,
                 what="new workers serving")
        wait_for(lambda: "worker_stopped" in running.log(), what="old workers drained")
    assert [detail for ok, detail in results if not ok] == []


def test_reload_whose_new_worker_cannot_boot_keeps_the_old_ones(trivial):
    running = trivial(workers=2)
    before = worker_pids(running.data_dir)
    open(os.path.join(running.data_dir, "fail-boot"), "w").close()
    running.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload_aborted" in running.log(), timeout=20, what="reload aborted")
    assert running.proc.poll() is None
    assert worker_pids(running.data_dir) == before
    assert {int(get(running.port)[1]) for _ in range(20)} == before


def test_request_migration_is_enabled_when_writable_and_explained_when_not(tmp_path):
    from appliance.supervisor import enable_request_migration
    knob = tmp_path / "tcp_migrate_req"
    knob.write_text("0\n")
    assert enable_request_migration(str(knob)) == "enabled"
    assert knob.read_text() == "1"
    assert enable_request_migration(str(knob)) == "on"
    missing = enable_request_migration(str(tmp_path / "absent" / "knob"))
    assert missing.startswith("off (") and "tcp_migrate_req=1" in missing
