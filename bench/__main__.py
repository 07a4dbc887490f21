"""python -m bench [--quick] [--only SCENARIO,...] [--out FILE]: run the benchmarks,
print the table and write bench/results/latest.json."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from bench import profiles, runner

DEFAULT_OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "latest.json")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the small subset (under two minutes) instead of the full matrix")
    parser.add_argument("--only", default="",
                        help=f"comma-separated scenarios to run, of: {', '.join(runner.SCENARIOS)}")
    parser.add_argument("--out", default=DEFAULT_OUT, help="where to write the JSON results")
    parser.add_argument("--feed-key", action="store_true",
                        help="seal the stacks' feed and control with a key file (lag, "
                             "resync... of an authenticated deployment)")
    parser.add_argument("--keep", action="store_true",
                        help="keep the temporary data directory (its path is printed)")
    args = parser.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    unknown = [s for s in only if s not in runner.SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {', '.join(unknown)}; choose from {', '.join(runner.SCENARIOS)}")
    profile = profiles.QUICK if args.quick else profiles.FULL
    # SIGTERM unwinds like Ctrl-C, so every process group the run started is stopped.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    document = runner.run(profile, args.out, only=only or None, keep=args.keep,
                          feed_key=args.feed_key)
    return 0 if not document["summary"]["failed_scenarios"] else 1


if __name__ == "__main__":
    sys.exit(main())
