# The two commands of the README: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PYTEST_FLAGS ?= -q
# The supported (Python, Django) pairs `make test` runs the whole suite on.
PAIRS ?= 3.10:5.2 3.11:5.2 3.12:6.0 3.13:6.1

.PHONY: demo test lint matrix bench wheel clean

$(VENV)/.stamp: pyproject.toml scripts/venv.sh
	PYTHON=$(PYTHON) scripts/venv.sh $(VENV) "django>=5.2,<5.3" "demo"
	touch $@

## demo: install what the demo needs, serve it under gunicorn, show where its time goes
demo: $(VENV)/.stamp
	$(VENV)/bin/flowtrace demo --output demo-output

## test: system packages, then per (Python, Django) pair a venv with everything, lint, the suite
test:
	scripts/system-deps.sh
	scripts/test-matrix.sh $(PAIRS)

## matrix: the suite on one pair, e.g. `make matrix PAIR=3.13:6.1`
matrix:
	scripts/system-deps.sh
	scripts/test-matrix.sh $(PAIR)

## bench: the overhead benchmark (prints its table)
bench: $(VENV)/.stamp
	scripts/system-deps.sh
	$(VENV)/bin/pip install -q -e ".[test]"
	$(VENV)/bin/python benchmarks/overhead.py

clean:
	rm -rf $(VENV) .venv-py* demo-output artifacts
