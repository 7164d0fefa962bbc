#!/usr/bin/env bash
# Create (or refresh) a virtualenv with flowtrace installed editable.
# usage: scripts/venv.sh VENV_DIR "django-spec" extras
# Works on a bare Debian with only python3 + apt: installs python3-venv if needed.
set -euo pipefail
venv=$1 django=$2 extras=$3
python=${PYTHON:-python3}
if [ ! -x "$venv/bin/python" ]; then
  if ! "$python" -m venv "$venv" 2>/dev/null; then
    rm -rf "$venv"
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
      apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null
      "$python" -m venv "$venv"
    else
      echo "error: '$python -m venv' failed; install python3-venv" >&2
      exit 1
    fi
  fi
fi
"$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
"$venv/bin/python" -m pip install -q --disable-pip-version-check -e ".[$extras]" "$django"
