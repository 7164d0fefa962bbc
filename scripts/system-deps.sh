#!/usr/bin/env bash
# System programs the tests and benchmarks use, from Debian's packages.
# Installs only what is missing; needs root (CI and our machines run as root).
set -euo pipefail
want=()
command -v wrk >/dev/null || want+=(wrk)
if [ ${#want[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" != 0 ]; then
  echo "note: not root, cannot install ${want[*]}; tests that need them will skip (never in CI)" >&2
  exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
