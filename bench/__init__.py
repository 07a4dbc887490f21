"""Benchmarks: each scenario prints figures and their ratio to a baseline measured in
the same run, and writes bench/results/latest.json. Run by hand (`make bench`,
`make bench-quick`); they are not tests."""
