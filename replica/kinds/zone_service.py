"""A cell's services as availability zones need them (Nova's cell table ``services``),
published by the cell's feed; a zone's hosts and state are read from them together
with the API database's aggregates (``zone_aggregate``)."""

from replica.feed import FEED_KINDS, KIND_ZONE_SERVICE
from replica.kinds.declaration import Kind

ZONE_SERVICE = Kind(
    feed=FEED_KINDS[KIND_ZONE_SERVICE], table="zone_services", key_column="service_key",
    owner_column="cell", render_columns="ZONE_SERVICE_COLUMNS", render_row="zone_service_row",
    count_label="zone_services", count_help="Services of the cell in the replica (for "
    "availability zones).", feed_role="servers", reads=("availability zones",))
