"""The replication half: cell-side publisher (replica.cell), feed protocol, replica store, ingest."""
