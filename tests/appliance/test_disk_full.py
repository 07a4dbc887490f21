"""A full disk is not a reason for the supervisor to fall over, nor for a line in the
log every second: writing the process table fails quietly (said once, retried), and a
worker's metrics flush failing is said once, then once a minute."""

from __future__ import annotations

import builtins

from appliance import logs
from appliance.settings import load
from appliance.supervisor import Supervisor


def _full_disk_open(path, mode="r", *args, **kwargs):
    if "w" in mode:
        return builtins.open("/dev/full", mode, *args, **kwargs)   # writes: ENOSPC
    return builtins.open(path, mode, *args, **kwargs)


def test_the_process_table_on_a_full_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("APPLIANCE_DATA_DIR", str(tmp_path))
    supervisor = Supervisor(load(None), ingest=False, admin=False, prepare_replica=False)
    said = []
    monkeypatch.setattr(logs, "emit", lambda level, event, **f: said.append((level, event)))
    monkeypatch.setattr("appliance.supervisor.open", _full_disk_open, raising=False)
    for _ in range(5):
        supervisor.num_workers += 1     # a change: the table is written again
        supervisor.write_table()        # does not raise
    assert said == [("error", "process_table_write_failed")]
    monkeypatch.undo()
    supervisor.write_table()
    assert (tmp_path / "processes.json").exists()


def test_metrics_flush_failures_are_said_once_a_minute(monkeypatch):
    said = []
    monkeypatch.setattr(logs, "emit", lambda level, event, **f: said.append(event))
    clock = [1000.0]
    failures = logs.RepeatedError("metrics_flush_failed", clock=lambda: clock[0])
    for second in range(120):
        clock[0] = 1000.0 + second
        failures.failed(OSError(28, "No space left on device"))
    assert said == ["metrics_flush_failed", "metrics_flush_failed"]
    failures.worked()
    assert said[-1] == "metrics_flush_works_again"
    failures.failed(OSError(28, "No space left on device"))
    assert said[-1] == "metrics_flush_failed" and len(said) == 4
