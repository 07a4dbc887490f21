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
    # owning cell, the project, soft deletion, creation time, the key's bucket rarely do,
    # nor in_cell (it changes with the owner, when a build request becomes an instance).
    # A column here keeps the upsert from rewriting the index entries that hold it
    # (in_cell: two of the five indexes; an update about 20 -> 17 us).
    stable=("cell", "project_id", "deleted", "created_at", "bucket", "in_cell"))
