VENV ?= .venv
LISTEN ?= :9941
ARGS ?=

.PHONY: bootstrap run test lint golden bench clean

bootstrap:
	scripts/bootstrap $(VENV)

run: bootstrap
	$(VENV)/bin/ksm-exporter --web.listen-address=$(LISTEN) $(ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check ksm_exporter tests bench
	$(VENV)/bin/ruff format --check ksm_exporter tests bench

test: bootstrap lint
	$(VENV)/bin/python -m pytest -q $(ARGS)

golden: bootstrap
	$(VENV)/bin/python -m tests.update_golden

clean:
	rm -rf $(VENV) build dist *.egg-info
