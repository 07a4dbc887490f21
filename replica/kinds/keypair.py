"""Key pairs: Nova's API database table ``key_pairs`` (per user), published by the
flavor source (the feed of Nova's API database)."""

from replica.feed import FEED_KINDS, KIND_KEYPAIR
from replica.kinds.declaration import Kind

KEYPAIR = Kind(
    feed=FEED_KINDS[KIND_KEYPAIR], table="keypairs", key_column="keypair_key",
    owner_column="source", render_columns="KEYPAIR_COLUMNS", render_row="keypair_row",
    count_label="keypairs", count_help="Key pairs of the feed in the replica.",
    feed_role="flavors")
