#!/usr/bin/env bash
# The whole suite on each supported (Python, Django) pair: scripts/test-matrix.sh 3.11:5.2 ...
# One venv per pair (.venv-py311-dj52, ...), made with the interpreter scripts/find-python.sh
# finds. A missing interpreter skips its pair with a reason on a laptop, fails in CI.
# Lint and mypy run once, on the first pair.
set -euo pipefail
cd "$(dirname "$0")/.."
first=1
failed=()
for pair in "$@"; do
  py=${pair%%:*} dj=${pair##*:}
  venv=".venv-py${py/./}-dj${dj/./}"
  if ! python=$(scripts/find-python.sh "$py"); then
    if [ "${CI:-}" = true ]; then
      echo "error: no Python $py interpreter (pyenv versions or python$py on PATH)" >&2
      exit 1
    fi
    echo "== skipping Python $py + Django $dj: no Python $py interpreter found" >&2
    continue
  fi
  next=$(python3 -c "a, b = '$dj'.split('.'); print(f'{a}.{int(b) + 1}')")
  echo "== Python $py ($python) + Django $dj ($venv)"
  PYTHON=$python scripts/venv.sh "$venv" "django>=$dj,<$next" "test" servers
  if [ $first = 1 ]; then
    "$venv/bin/ruff" check flowtrace tests benchmarks dashboards
    "$venv/bin/ruff" format --check flowtrace tests benchmarks dashboards
    "$venv/bin/mypy"
    first=0
  fi
  if ! PYTHONDEVMODE=1 "$venv/bin/python" -m pytest ${PYTEST_FLAGS:--q}; then
    failed+=("Python $py + Django $dj")
  fi
done
if [ $first = 1 ]; then
  echo "error: no (Python, Django) pair could run" >&2
  exit 1
fi
if [ ${#failed[@]} -gt 0 ]; then
  echo "FAILED on: ${failed[*]}" >&2
  exit 1
fi
