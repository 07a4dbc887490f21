"""Services: a cell database's ``services`` rows (GET /os-services, and with the
aggregates the availability zones), published by the cell's feed."""

from replica.feed import FEED_KINDS, KIND_SERVICE
from replica.kinds.declaration import Kind

SERVICE = Kind(
    feed=FEED_KINDS[KIND_SERVICE], table="services", key_column="uuid",
    owner_column="cell", render_columns="SERVICE_COLUMNS", render_row="service_row",
    count_label="services", count_help="Services of the cell in the replica.",
    feed_role="servers", reads=("services", "availability zones"))
