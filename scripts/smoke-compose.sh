#!/usr/bin/env bash
# For people with Docker: bring the stack up, wait until the dashboard has
# data, check Prometheus and Grafana over their HTTP APIs, tear it down.
# (Our own machines have no Docker engine; this script cannot run there. It is
# kept correct by construction: the queries it runs are the dashboard's own,
# which tests/test_dashboard_live.py runs against a real Prometheus.)
set -euo pipefail
cd "$(dirname "$0")/.."
compose() { docker compose "$@"; }
cleanup() { compose down -v --remove-orphans >/dev/null 2>&1 || true; }
trap cleanup EXIT

compose up -d --build
echo "waiting for flowtrace metrics in Prometheus (up to 120 s)..."
query='sum(flowtrace_request_duration_seconds_count{service_name="flowtrace-demo"})'
for _ in $(seq 1 60); do
  value=$(curl -fsS --get http://127.0.0.1:9090/api/v1/query --data-urlencode "query=$query" \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else 0)') || value=0
  if python3 -c "import sys; sys.exit(0 if float('$value') > 20 else 1)"; then break; fi
  sleep 2
done
python3 -c "import sys; sys.exit(0 if float('$value') > 20 else 1)" || { echo "no metrics"; exit 1; }
echo "requests recorded: $value"

# Every Prometheus query of the dashboard must return data.
python3 - <<'PY'
import json, urllib.parse, urllib.request
dashboard = json.load(open("dashboards/flowtrace.json"))
subst = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "5m",
         "$service": "flowtrace-demo", "$route": ".*", "$method": ".*"}
failed = 0
for panel in dashboard["panels"]:
    for target in panel.get("targets", []):
        if "expr" not in target:
            continue
        expr = target["expr"]
        for key, value in subst.items():
            expr = expr.replace(key, value)
        url = "http://127.0.0.1:9090/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        result = json.load(urllib.request.urlopen(url))["data"]["result"]
        print(f"{len(result):4d} series  {panel['title']} ({target['refId']})")
        failed += not result
raise SystemExit(failed)
PY

# Grafana: the provisioned dashboard exists, and its datasources are healthy.
curl -fsS http://127.0.0.1:3000/api/dashboards/uid/flowtrace >/dev/null
for uid in prometheus tempo jaeger; do
  curl -fsS "http://127.0.0.1:3000/api/datasources/uid/$uid/health" >/dev/null || {
    echo "datasource $uid unhealthy"; exit 1; }
done
# Tempo has traces from the demo.
curl -fsS --get http://127.0.0.1:3200/api/search --data-urlencode 'q={ resource.service.name = "flowtrace-demo" }' \
  | python3 -c 'import json,sys; assert json.load(sys.stdin)["traces"], "no traces in Tempo"'
echo "compose smoke test passed"
