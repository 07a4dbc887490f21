"""Hypervisors: a cell's ``compute_nodes`` with its host's ``nova-compute`` service,
published by the cell's feed."""

from replica.feed import FEED_KINDS, KIND_HYPERVISOR
from replica.kinds.declaration import Kind

HYPERVISOR = Kind(
    feed=FEED_KINDS[KIND_HYPERVISOR], table="hypervisors", key_column="uuid",
    owner_column="cell", render_columns="HYPERVISOR_COLUMNS", render_row="hypervisor_row",
    count_label="hypervisors", count_help="Hypervisors of the cell in the replica.",
    feed_role="servers")
