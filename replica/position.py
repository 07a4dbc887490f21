"""A replica position: how far one feed has been applied.

A position is a value, written in the same transaction as the changes it covers and
compared in one place (``Position.relation``).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Relation(enum.Enum):
    """How an incoming event's seq relates to the position already applied."""

    NEXT = "next"            # seq == applied + 1: apply it
    DUPLICATE = "duplicate"  # seq <= applied: already applied, ignore
    GAP = "gap"              # seq > applied + 1: events were lost, replay
    NEW_EPOCH = "new_epoch"  # a different epoch: the cell was rebuilt, resync


@dataclass(frozen=True, slots=True)
class Position:
    cell: str
    epoch: str
    seq: int

    def relation(self, epoch: str, seq: int) -> Relation:
        if epoch != self.epoch:
            return Relation.NEW_EPOCH
        if seq <= self.seq:
            return Relation.DUPLICATE
        if seq == self.seq + 1:
            return Relation.NEXT
        return Relation.GAP

    def advanced(self, seq: int) -> "Position":
        return Position(self.cell, self.epoch, seq)

    def __str__(self) -> str:
        return f"{self.cell}@{self.epoch[:8]}:{self.seq}"
