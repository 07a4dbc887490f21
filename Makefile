# The two commands a new user needs: `make demo` and `make test`.
# Each installs what it needs first (build/bootstrap.sh is idempotent).
.PHONY: demo test bootstrap binary bench bench-quick soak clean

PY := .venv/bin/python

bootstrap:
	@bash build/bootstrap.sh

demo: bootstrap
	.venv/bin/appliance demo

# Two test processes (pytest-xdist), each test module whole on one of them.
test: bootstrap
	$(PY) -m pytest -q -n 2 --dist loadfile

binary: bootstrap
	bash build/build-binary.sh

bench: bootstrap
	$(PY) -m bench

bench-quick: bootstrap
	$(PY) -m bench --quick

# A fault run against a demo-like deployment (bench/README.md); SOAK_MINUTES long.
SOAK_MINUTES ?= 10
soak: bootstrap
	$(PY) -m bench.soak --minutes $(SOAK_MINUTES) $(if $(SOAK_SEED),--seed $(SOAK_SEED))

clean:
	rm -rf build/work dist .pytest_cache
