"""The largest replica against the smallest, measured beside it in interleaved rounds.

One pair of short runs (the large stack, then the small one beside it) swings by a tenth
from one pair to the next on a shared machine, as much as the budget allows (0.95 x).
Each request therefore goes to both stacks ``rounds`` times, in turn and in alternating
order (large first, then small first, ...), so that a drift of the machine during a
round favours neither, and the round whose ratio (large / small) is the median counts;
every round's ratio goes into the figure's details. Before the rounds each stack serves
the request once, unrecorded (``warm_up``, ``PAIR_WARM_UP_S``): the small stack has
served it before (its own size's run), the large one has not, and a first round on it
measured its cold caches (show at 1,000,000 servers: 0.81 x in the first round, 0.98 and
0.95 x in the next two). The warm-up has not removed a lower first round: show's first
round after it was 0.86 x and 0.90 x in the two runs since (2026-12-07).
"""

from __future__ import annotations

from typing import Callable, TypeVar

Run = TypeVar("Run")
# The key under which a request's round ratios are kept beside its run in the smallest
# size's results (``pair_out[key + ROUND_RATIOS]``).
ROUND_RATIOS = "#round_ratios"
PAIR_WARM_UP_S = 1.0   # the unrecorded run on each stack of a pair before its rounds


def rate_ratio(run, base) -> float:
    """``run``'s requests per second over ``base``'s."""
    return run.requests_per_s / max(base.requests_per_s, 1e-9)


def median_round(tries: list, ratio: Callable) -> object:
    """The item of ``tries`` whose ``ratio(item)`` is the median; of an even number, the
    lower of the two middle ones."""
    return sorted(tries, key=ratio)[(len(tries) - 1) // 2]


def interleaved(run_large: Callable[[], Run], run_small: Callable[[], Run], rounds: int,
                warm_up: Callable[[], object] | None = None) -> tuple[Run, Run, list[float]]:
    """``(large run, small run, round ratios)``: the runs of the median round of
    ``rounds`` (at least one), large first in the even rounds, small first in the odd
    (counted from 0); ``warm_up`` (both stacks served the request, unrecorded) first."""
    if warm_up is not None:
        warm_up()
    tries = []
    for n in range(max(1, rounds)):
        if n % 2 == 0:
            large = run_large()
            small = run_small()
        else:
            small = run_small()
            large = run_large()
        tries.append((large, small))
    large, small = median_round(tries, lambda pair: rate_ratio(*pair))
    return large, small, [round(rate_ratio(*pair), 3) for pair in tries]
