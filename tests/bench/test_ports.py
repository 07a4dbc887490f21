"""bench.ports.free_port: alone, what the kernel hands out; in a test worker, ports
from that worker's own range, each handed out once, and bindable."""

from __future__ import annotations

import socket

import pytest

from bench import ports


def _bind(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", port))


def test_alone_the_kernel_picks(monkeypatch):
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    port = ports.free_port()
    assert port >= 1024
    _bind(port)


@pytest.mark.parametrize("worker, number", [("gw0", 0), ("gw1", 1), ("gw3", 3)])
def test_a_worker_takes_ports_from_its_own_range(monkeypatch, worker, number):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", worker)
    monkeypatch.setattr(ports, "_handed", set())
    first = ports.WORKER_PORTS_FROM + number * ports.WORKER_PORTS_SPAN
    got = [ports.free_port() for _ in range(50)]
    assert len(set(got)) == len(got)                       # none handed out twice
    assert all(first <= p < first + ports.WORKER_PORTS_SPAN for p in got)
    assert all(p < 32768 for p in got)                     # below the ephemeral range
    for p in got:
        _bind(p)


def test_a_port_in_use_is_not_handed_out(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw2")
    # A range small enough to fill, apart from the ones the suite's workers use.
    monkeypatch.setattr(ports, "WORKER_PORTS_SPAN", 16)
    monkeypatch.setattr(ports, "WORKER_PORTS_FROM", 30_000)
    first = ports.WORKER_PORTS_FROM + 2 * ports.WORKER_PORTS_SPAN
    held = []
    try:
        for port in range(first, first + ports.WORKER_PORTS_SPAN - 1):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                s.close()
                continue
            held.append(s)
        monkeypatch.setattr(ports, "_handed", set())
        free = ports.free_port()
        assert free == first + ports.WORKER_PORTS_SPAN - 1
        with pytest.raises(OSError, match="no free loopback port"):
            ports.free_port()
    finally:
        for s in held:
            s.close()


def test_beyond_the_ranges_the_kernel_picks(monkeypatch):
    monkeypatch.setenv("PYTEST_XDIST_WORKER", f"gw{ports.WORKER_PORTS_MAX_WORKERS}")
    port = ports.free_port()
    assert port >= 1024
    _bind(port)
