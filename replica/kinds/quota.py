"""Quota limits: Nova's API database ``quotas`` (per project) and ``quota_classes``
(the ``default`` class) over the publisher's configured defaults, with each project's
server group count; published by the API database's feed."""

from replica.feed import FEED_KINDS, KIND_QUOTA
from replica.kinds.declaration import Kind

QUOTA = Kind(
    feed=FEED_KINDS[KIND_QUOTA], table="quotas", key_column="quota_key",
    owner_column="source", render_columns="QUOTA_COLUMNS", render_row="quota_row",
    count_label="quotas", count_help="Quota limit sets of the feed in the replica.",
    feed_role="flavors", reads=("limits", "quota sets"))
