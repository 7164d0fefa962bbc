#!/usr/bin/env bash
# System programs the tests and benchmarks use, from Debian's packages:
#   prometheus (2.42, extracted into .cache/prometheus: no service is started),
#   node + npm (for Grafana's TraceQL grammar), nginx (queue-time test), wrk (benchmark),
#   chromium (the HTML report is checked in a real headless browser), postgresql (a
#   real server per test session, in a temporary folder: the package's own service is
#   never started), apache2-dev + apache2-bin (mod_wsgi builds against apxs and
#   mod_wsgi-express runs Apache).
# Installs only what is missing; needs root (CI and our machines run as root).
set -euo pipefail
cd "$(dirname "$0")/.."
cache=.cache
want=()
command -v wrk >/dev/null || want+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || want+=(nginx)
command -v node >/dev/null || want+=(nodejs)
command -v npm >/dev/null || want+=(npm)
command -v chromium >/dev/null || want+=(chromium)
ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 || want+=(postgresql)
command -v apxs >/dev/null || [ -x /usr/bin/apxs ] || want+=(apache2-dev)
[ -x /usr/sbin/apache2 ] || want+=(apache2-bin)
have_prometheus() { command -v prometheus >/dev/null || [ -x "$cache/prometheus/usr/bin/prometheus" ]; }
if [ ${#want[@]} -gt 0 ] || ! have_prometheus; then
  if [ "$(id -u)" != 0 ]; then
    echo "note: not root, cannot install ${want[*]} prometheus; tests that need them skip (never in CI)" >&2
  else
    apt-get update -qq
    if [ ${#want[@]} -gt 0 ]; then
      # policy-rc.d: install nginx, Apache, PostgreSQL without starting their services.
      policy=/usr/sbin/policy-rc.d created=0
      if [ ! -e "$policy" ]; then printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created=1; fi
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null
      if [ "$created" = 1 ]; then rm -f "$policy"; fi
    fi
    if ! have_prometheus; then
      mkdir -p "$cache/debs" "$cache/prometheus"
      (cd "$cache/debs" && apt-get download -qq prometheus)
      dpkg-deb -x "$cache"/debs/prometheus_*.deb "$cache/prometheus"
    fi
  fi
fi
if command -v npm >/dev/null && [ ! -d tests/traceql/node_modules/@grafana/lezer-traceql ]; then
  (cd tests/traceql && npm ci --no-audit --no-fund --silent)
fi
