"""A writer over a fresh replica file, with the stand-in render's rows."""

import pytest

from replica import feed
from replica.store.connection import open_writer
from replica.store.writer import Change, Writer

from tests.replica.conftest import StandInRender


@pytest.fixture
def setup(replica_path):
    render = StandInRender(replica_path)
    conn = open_writer(replica_path)
    writer = Writer(conn, render.SERVER_COLUMNS, render.FLAVOR_COLUMNS)
    yield writer, render, replica_path
    conn.close()


def upsert(render, cell, seq, entity) -> Change:
    return Change(feed.KIND_SERVER, entity["uuid"], cell, render.server_row(cell, seq, entity))
