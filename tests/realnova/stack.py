"""A whole real-Nova stack per backend: the databases made by nova-manage, a writer kept open,
nova-api over them, sharing one Neutron stub; MariaDB and SQLite built side by side.

    mariadb = mariadb_fixture(scope="module")
    neutron = neutron_stub_fixture(scope="module")
    stacks = nova_stacks_fixture(populate=my_populate, scope="module")

    @pytest.fixture(scope="module", params=["mariadb", "sqlite"])
    def stack(request, stacks):
        return stacks[request.param]

``populate(stack)`` runs after nova-manage and before nova-api starts; what it returns is
``stack.data``.
"""

from __future__ import annotations

import contextlib

import pytest

from tests.realnova.mariadb import scratch_dir
from tests.realnova.nova_api import NeutronStub, NovaAPI
from tests.realnova.novadb import NovaDeployment, run_concurrently

BACKENDS = ("mariadb", "sqlite")


class NovaStack:
    """One deployment, its writer (kept open) and nova-api over it."""

    def __init__(self, deployment: NovaDeployment, neutron: NeutronStub):
        self.deployment = deployment
        self.neutron = neutron
        self.backend = deployment.backend
        self.writer = None
        self.api: NovaAPI | None = None
        self.data = None

    def build(self, populate=None) -> "NovaStack":
        self.deployment.create()
        self.writer = self.deployment.writer()
        if populate is not None:
            self.data = populate(self)
        self.api = NovaAPI(self.deployment, self.neutron).start()
        return self

    def close(self):
        if self.api is not None:
            self.api.stop()
        if self.writer is not None:
            self.writer.close()


@contextlib.contextmanager
def built_stacks(mariadb, neutron: NeutronStub, populate=None, backends=BACKENDS,
                 prefix: str = ""):
    """``{backend: NovaStack}`` built side by side, closed at exit. ``prefix`` names the
    MariaDB databases (several stacks can share one server)."""
    with contextlib.ExitStack() as cleanup:
        stacks = {}
        for backend in backends:
            workdir = cleanup.enter_context(scratch_dir(f"nova-{backend}"))
            if backend == "mariadb":
                deployment = NovaDeployment.on_mariadb(mariadb, workdir, prefix=prefix)
            else:
                deployment = NovaDeployment.on_sqlite(workdir)
            stacks[backend] = NovaStack(deployment, neutron)
        try:
            run_concurrently(*(lambda s=s: s.build(populate) for s in stacks.values()))
            yield stacks
        finally:
            run_concurrently(*(s.close for s in stacks.values()))


def nova_stacks_fixture(populate=None, backends=BACKENDS, scope: str = "module",
                        mariadb_fixture: str = "mariadb", neutron_fixture: str = "neutron",
                        prefix: str = "", name: str | None = None):
    """A fixture yielding ``{backend: NovaStack}`` (see :func:`built_stacks`)."""
    @pytest.fixture(scope=scope, name=name)
    def _stacks(request):
        mariadb = request.getfixturevalue(mariadb_fixture) if "mariadb" in backends else None
        neutron = request.getfixturevalue(neutron_fixture)
        with built_stacks(mariadb, neutron, populate, backends, prefix) as stacks:
            yield stacks
    return _stacks
