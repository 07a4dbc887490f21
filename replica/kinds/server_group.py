"""Server groups: Nova's API database ``instance_groups`` with their policy and
members, published by the API database's feed."""

from replica.feed import FEED_KINDS, KIND_SERVER_GROUP
from replica.kinds.declaration import Kind

SERVER_GROUP = Kind(
    feed=FEED_KINDS[KIND_SERVER_GROUP], table="server_groups", key_column="group_key",
    owner_column="source", render_columns="SERVER_GROUP_COLUMNS",
    render_row="server_group_row", count_label="server_groups",
    count_help="Server groups of the feed in the replica.", feed_role="flavors")
