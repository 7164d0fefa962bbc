#!/usr/bin/env bash
# Create (or refresh) a virtualenv with flowtrace installed editable.
# usage: scripts/venv.sh VENV_DIR "django-spec" extras [servers]
# Works on a bare Debian with only python3 + apt: installs python3-venv if needed.
# "servers" also builds the WSGI servers the server matrix runs (uWSGI, mod_wsgi compile
# with gcc; mod_wsgi needs Apache's apxs from Debian's apache2-dev): one that cannot be
# built is reported, and its tests skip (never in CI, where system-deps.sh installs all).
set -euo pipefail
venv=$1 django=$2 extras=$3 servers=${4:-}
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
pip=("$venv/bin/python" -m pip -q --disable-pip-version-check)
"${pip[@]}" install --upgrade pip >/dev/null
"${pip[@]}" install -e ".[$extras]" "$django"
if [ "$servers" = servers ]; then
  for server in waitress uwsgi mod_wsgi; do
    if ! "${pip[@]}" install "$server" >/dev/null 2>"$venv/$server-build.log"; then
      echo "note: could not install $server (see $venv/$server-build.log); its tests skip" >&2
    fi
  done
fi
