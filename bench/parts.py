"""Which parts of the product this tree has. A scenario whose parts are missing (or do
not import) is reported as skipped, with the reason, instead of failing the run."""

from __future__ import annotations


def _simulator() -> None:
    from replica.cell.simulator import SimulatorConfig, populate, run_simulator  # noqa: F401
    from replica.cell.outbox import init_cell_db  # noqa: F401


def _entities() -> None:
    from replica.cell.entity import build_servers  # noqa: F401


def _publisher() -> None:
    from replica.cell.publisher import PublisherConfig, run_publisher  # noqa: F401


def _render() -> None:
    from replica.render import ServerView, render_server_document, server_row  # noqa: F401


def _writer() -> None:
    from replica.store.writer import Change, Writer  # noqa: F401


def _ingest() -> None:
    from replica.ingest import IngestConfig, run_ingest  # noqa: F401


def _api() -> None:
    from appliance.api import ApiConfig, make_app  # noqa: F401


def _supervisor() -> None:
    from appliance.supervisor import Supervisor  # noqa: F401
    from appliance.cli import main  # noqa: F401
    from appliance.admin import make_app  # noqa: F401


def _side_keystone() -> None:
    """The side environment with Keystone and gunicorn (``$APPLIANCE_NOVA_VENV``, else
    ``<repo>/.nova-venv``): not part of the product, but the edge scenario needs it."""
    from bench.side_env import nova_env

    env = nova_env()
    env.program("keystone-manage")
    env.program("gunicorn")


def _side_nova() -> None:
    """The side environment with Nova and gunicorn, and the test harness that drives it
    (``tests/realnova``): the real nova-api baseline needs both."""
    from bench.side_env import nova_env
    from tests.realnova.nova_api import NovaAPI  # noqa: F401
    from tests.realnova.novadb import NovaDeployment  # noqa: F401

    env = nova_env()
    env.program("nova-manage")
    env.program("gunicorn")


def _tls() -> None:
    from appliance.tls import server_context  # noqa: F401
    from cryptography import x509  # noqa: F401


def _edge() -> None:
    from appliance.api.keystone import KeystoneAuth  # noqa: F401
    from appliance.api.upstream import Upstream  # noqa: F401


def _mariadb() -> None:
    """A MariaDB server program (Debian's package) and the side environment with Nova
    (its databases are made by nova-manage): not part of the product either."""
    from bench.side_env import nova_env
    from tests.realnova.mariadb import MARIADBD_CANDIDATES, _find_program

    _find_program(MARIADBD_CANDIDATES)
    nova_env().program("nova-manage")
    from replica.cell.binlog import Tailer  # noqa: F401


CHECKS = {
    "simulator": _simulator, "entities": _entities, "publisher": _publisher,
    "render": _render, "writer": _writer, "ingest": _ingest, "api": _api,
    "supervisor": _supervisor, "edge endpoint": _edge, "tls": _tls,
    "side environment (Keystone)": _side_keystone,
    "MariaDB and the side environment (Nova)": _mariadb,
    "side environment (Nova)": _side_nova,
}

_STACK = ("simulator", "entities", "publisher", "render", "writer", "ingest", "api", "supervisor")
NEEDS = {
    "read": _STACK,
    "scaling": _STACK,
    "routes": _STACK,
    "lag": _STACK,
    "resync": _STACK,
    "footprint": _STACK,
    "ingest": ("simulator", "entities", "render", "writer"),
    "edge": (*_STACK, "edge endpoint", "tls", "side environment (Keystone)"),
    "mariadb": (*_STACK, "MariaDB and the side environment (Nova)"),
    "novaapi": (*_STACK, "side environment (Nova)"),
}


def missing() -> dict[str, str]:
    """{part: why it is not usable} for every part that does not import."""
    out = {}
    for name, check in CHECKS.items():
        try:
            check()
        except Exception as exc:  # ImportError, or a part that fails at import
            out[name] = f"{type(exc).__name__}: {exc}"
    return out


def unavailable(scenario: str, gone: dict[str, str]) -> str | None:
    """Why ``scenario`` cannot run, or None."""
    lacking = [p for p in NEEDS[scenario] if p in gone]
    if not lacking:
        return None
    return "; ".join(f"{p} not available ({gone[p]})" for p in lacking)
