"""The cell side of the replication: the cell database and its outbox, entity
building, the publisher (feed + control) and the lifecycle simulator."""
