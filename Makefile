VENV ?= .venv
LISTEN ?= :9941
ARGS ?=

.PHONY: bootstrap run test test-unit test-system test-pythons lint fmt golden bench clean

bootstrap:
	scripts/bootstrap $(VENV)

run: bootstrap
	$(VENV)/bin/ksm-exporter --web.listen-address=$(LISTEN) $(ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

fmt: bootstrap
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

# Everything: lint, the unit tier on every other supported Python, then the whole
# suite here (unit and system tiers: real KSM, packaging, nspawn, Prometheus).
test: bootstrap lint
	scripts/test-pythons --covered-by $(VENV)/bin/python
	$(VENV)/bin/python -m pytest -q $(ARGS)

# The unit tier on Python 3.9 (lowest dependency versions) to 3.13, each in a cached venv;
# a Python that is not installed is one SKIPPED line (scripts/test-pythons).
test-pythons:
	scripts/test-pythons $(ARGS)

# The package's modules on fixture trees: no root, no packaging, no container.
test-unit: bootstrap
	$(VENV)/bin/python -m pytest -q tests/unit $(ARGS)

test-system: bootstrap
	$(VENV)/bin/python -m pytest -q tests/system $(ARGS)

golden: bootstrap
	$(VENV)/bin/python -m tests.update_golden

# The exporter beside node_exporter in one run (docs/performance.md).
bench: bootstrap
	$(VENV)/bin/python -m bench.compare_node_exporter $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
