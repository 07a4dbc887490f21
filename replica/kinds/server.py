"""Servers: Nova's instances, published by each cell's feed."""

from replica.feed import FEED_KINDS, KIND_SERVER
from replica.kinds.declaration import Kind

SERVER = Kind(
    feed=FEED_KINDS[KIND_SERVER], table="servers", key_column="uuid", owner_column="cell",
    render_columns="SERVER_COLUMNS", render_row="server_row",
    count_label="servers",
    count_help="Servers of the cell in the replica (soft-deleted ones included).",
    feed_role="servers",
    # Of the servers' indexed columns only updated_at changes with most events: the
    # owning cell, the project, soft deletion, creation time, the key's bucket rarely do.
    stable=("cell", "project_id", "deleted", "created_at", "bucket"))
