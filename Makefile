# The two commands a new user needs: `make demo` and `make test`.
# Each installs what it needs first (build/bootstrap.sh is idempotent).
.PHONY: demo test bootstrap binary bench bench-quick clean

PY := .venv/bin/python

bootstrap:
	@bash build/bootstrap.sh

demo: bootstrap
	.venv/bin/appliance demo

test: bootstrap
	$(PY) -m pytest -q

binary: bootstrap
	bash build/build-binary.sh

bench: bootstrap
	$(PY) -m bench

bench-quick: bootstrap
	$(PY) -m bench --quick

clean:
	rm -rf build/work dist .pytest_cache
