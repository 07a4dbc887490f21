from replica.position import Position, Relation


def test_relations():
    p = Position("cell1", "e1", 10)
    assert p.relation("e1", 11) is Relation.NEXT
    assert p.relation("e1", 10) is Relation.DUPLICATE
    assert p.relation("e1", 3) is Relation.DUPLICATE
    assert p.relation("e1", 12) is Relation.GAP
    assert p.relation("e2", 11) is Relation.NEW_EPOCH
    assert p.advanced(12) == Position("cell1", "e1", 12)
    assert str(p) == "cell1@e1:10"
