#!/usr/bin/env bash
# Print the path of a working interpreter for Python X.Y, or fail.
# usage: scripts/find-python.sh 3.12
# Looks for pythonX.Y on PATH (a pyenv shim counts only if it runs), then in
# pyenv's versions folder (our machines' interpreters are pyenv-built).
set -uo pipefail
want=$1
if command -v "python$want" >/dev/null && "python$want" -c "pass" 2>/dev/null; then
  "python$want" -c "import sys; print(sys.executable)"
  exit 0
fi
root=${PYENV_ROOT:-$HOME/.pyenv}
for candidate in $(ls -d "$root"/versions/"$want".*/bin/python"$want" 2>/dev/null | sort -V -r); do
  if "$candidate" -c "pass" 2>/dev/null; then
    echo "$candidate"
    exit 0
  fi
done
exit 1
