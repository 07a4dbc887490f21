"""Instance actions (and their events): Nova's cell tables ``instance_actions`` and
``instance_actions_events``, published by the cell's feed that holds the instance."""

from replica.feed import FEED_KINDS, KIND_INSTANCE_ACTION
from replica.kinds.declaration import Kind

INSTANCE_ACTION = Kind(
    feed=FEED_KINDS[KIND_INSTANCE_ACTION], table="instance_actions", key_column="action_key",
    owner_column="cell", render_columns="INSTANCE_ACTION_COLUMNS",
    render_row="instance_action_row", count_label="instance_actions",
    count_help="Instance actions of the cell in the replica.", feed_role="servers",
    stable=("cell", "instance_uuid", "action_id", "created_at", "bucket"))
