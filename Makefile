VENV ?= .venv
LISTEN ?= :9941
ARGS ?=

.PHONY: bootstrap run test lint golden bench clean

bootstrap:
	scripts/bootstrap $(VENV)

run: bootstrap
	$(VENV)/bin/ksm-exporter --web.listen-address=$(LISTEN) $(ARGS)

lint: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: bootstrap lint
	$(VENV)/bin/python -m pytest -q $(ARGS)

golden: bootstrap
	$(VENV)/bin/python -m tests.update_golden

clean:
	rm -rf $(VENV) build dist *.egg-info
