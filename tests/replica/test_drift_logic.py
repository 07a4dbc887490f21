"""Digest and bucket comparison of the drift check."""

from replica import feed
from replica.drift import differing_buckets, differing_keys


def test_differing_buckets_accepts_list_or_map():
    ours = [[0, 0] for _ in range(feed.DIGEST_BUCKETS)]
    theirs = [list(b) for b in ours]
    theirs[3] = [1, 99]
    assert differing_buckets(theirs, ours) == [3]
    assert differing_buckets({"3": [1, 99], 7: [0, 0]}, ours) == [3]
    assert differing_buckets(ours, ours) == []


def test_differing_keys_skips_keys_changed_after_the_digest_seq():
    cell = {"same": [10, 5], "changed": [11, 5], "missing": [12, 5], "later": [13, 50]}
    replica = {"same": ("server", 10, 5), "changed": ("server", 99, 5),
               "later": ("server", 1, 5), "extra": ("server", 7, 3)}
    assert differing_keys(cell, replica, 20) == (["changed", "missing"], ["extra"])
