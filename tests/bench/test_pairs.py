"""bench.pairs: the interleaved rounds of the largest replica against the smallest."""

from __future__ import annotations

from dataclasses import dataclass

from bench.pairs import interleaved


@dataclass
class Run:
    name: str
    requests_per_s: float


def _runner(order: list, name: str, rates: list[float]):
    def run():
        order.append(name)
        return Run(name, rates[sum(1 for o in order if o == name) - 1])
    return run


def test_the_rounds_alternate_and_the_median_round_counts():
    order: list = []
    large, small, ratios = interleaved(_runner(order, "large", [90, 50, 100]),
                                       _runner(order, "small", [100, 100, 100]), 3)
    assert order == ["large", "small", "small", "large", "large", "small"]
    assert ratios == [0.9, 0.5, 1.0]
    assert (large.requests_per_s, small.requests_per_s) == (90, 100)


def test_of_two_rounds_the_lower_counts_and_one_round_is_one_pair():
    large, _small, ratios = interleaved(_runner([], "large", [80, 100]),
                                        _runner([], "small", [100, 100]), 2)
    assert ratios == [0.8, 1.0] and large.requests_per_s == 80
    order: list = []
    interleaved(_runner(order, "large", [1]), _runner(order, "small", [1]), 0)
    assert order == ["large", "small"]


def test_the_warm_up_runs_once_before_the_rounds_and_is_not_a_round():
    order: list = []
    large, small, ratios = interleaved(_runner(order, "large", [90, 100]),
                                       _runner(order, "small", [100, 100]), 2,
                                       lambda: order.append("warm-up"))
    assert order == ["warm-up", "large", "small", "small", "large"]
    assert ratios == [0.9, 1.0] and (large.requests_per_s, small.requests_per_s) == (90, 100)
