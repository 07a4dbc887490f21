"""Fixtures of the conformance tests: the replicas of ``replicas.py``, each served over
real HTTP by the API tests' server (tests/api/serve.py)."""

from __future__ import annotations

import os

import pytest

from tests.api import entities as E
from tests.api.conftest import serving
from tests.conformance.replicas import (Simulated, conformance_flavors, conformance_servers,
                                        simulated_entities)


@pytest.fixture(scope="session")
def conformance_api(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("conformance") / "replica.db")
    E.fill_replica(path, conformance_servers(), conformance_flavors(),
                   {"cell1": 41, "cell2": 17, "flavors": 7})
    with serving(path) as client:
        yield client


@pytest.fixture(scope="session")
def simulated(tmp_path_factory):
    workdir = str(tmp_path_factory.mktemp("simulated"))
    servers, flavors = simulated_entities(workdir)
    path = os.path.join(workdir, "replica.db")
    E.fill_replica(path, [("sim", e) for e in servers], flavors,
                   {"sim": len(servers), "flavors": len(flavors)})
    with serving(path) as client:
        yield Simulated(client, servers, flavors)
