VENV ?= .venv
LISTEN ?= :9941
ARGS ?=

.PHONY: bootstrap run test test-unit test-system test-pythons typecheck lint fmt golden bench bench-fleet clean mixin

bootstrap:
	scripts/bootstrap $(VENV)

run: bootstrap
	$(VENV)/bin/ksm-exporter --web.listen-address=$(LISTEN) $(ARGS)

MIXIN_SOURCES = $(shell find mixin -name '*.libsonnet')

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	jsonnetfmt --test $(MIXIN_SOURCES)

fmt: bootstrap
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .
	jsonnetfmt -i $(MIXIN_SOURCES)

# The rules, the dashboard and the PrometheusRule, rendered from the monitoring mixin
# (mixin/, the one source; docs/dashboard-and-alerts.md) with its default configuration.
mixin:
	mixin/render .

# Everything: lint, types, the unit tier on every other supported Python, then the whole
# suite here (unit and system tiers: real KSM, packaging, nspawn, Prometheus).
test: bootstrap lint typecheck
	scripts/test-pythons --covered-by $(VENV)/bin/python
	$(VENV)/bin/python -m pytest -q $(ARGS)

# mypy as configured in pyproject.toml: the package, checked as Python 3.9 (the oldest
# supported), so an annotation evaluated at run time that 3.9 cannot run is an error.
typecheck: bootstrap
	$(VENV)/bin/mypy

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

# The dashboard and the rules on a real Prometheus holding a synthetic fleet backfilled
# with promtool (docs/performance.md, "A fleet on one Prometheus"): about 10 minutes for
# 100 nodes, 40 for 1,000; not part of make test. FLEET=100 1000 5000 for other sizes.
FLEET ?= 100 1000
bench-fleet: bootstrap
	$(VENV)/bin/python -m bench.fleet $(foreach n,$(FLEET),--nodes $(n)) $(ARGS)

clean:
	rm -rf $(VENV) build dist *.egg-info
