# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
VENV42 ?= .venv-django42
PYTEST_FLAGS ?= -q

.PHONY: demo test test-django52 test-django42 lint bench clean

$(VENV)/.stamp: pyproject.toml scripts/venv.sh
	PYTHON=$(PYTHON) scripts/venv.sh $(VENV) "django>=5.2,<5.3" "demo,test"
	touch $@

$(VENV42)/.stamp: pyproject.toml scripts/venv.sh
	PYTHON=$(PYTHON) scripts/venv.sh $(VENV42) "django>=4.2,<4.3" "test"
	touch $@

## demo: install, serve the demo app under gunicorn, show where its time goes
demo: $(VENV)/.stamp
	$(VENV)/bin/flowtrace demo --output demo-output

## test: install everything the tests need, lint, and run the suite on Django 5.2 and 4.2
test: lint test-django52 test-django42

lint: $(VENV)/.stamp
	$(VENV)/bin/ruff check flowtrace tests benchmarks dashboards
	$(VENV)/bin/ruff format --check flowtrace tests benchmarks dashboards
	$(VENV)/bin/mypy

test-django52: $(VENV)/.stamp
	scripts/system-deps.sh
	PYTHONDEVMODE=1 $(VENV)/bin/python -m pytest $(PYTEST_FLAGS)

test-django42: $(VENV42)/.stamp
	scripts/system-deps.sh
	PYTHONDEVMODE=1 $(VENV42)/bin/python -m pytest $(PYTEST_FLAGS)

## bench: the overhead benchmark (prints its table)
bench: $(VENV)/.stamp
	scripts/system-deps.sh
	$(VENV)/bin/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) $(VENV42) demo-output artifacts
