"""Secrets planted everywhere, every route served by gunicorn: not one exported byte
(spans, metrics, logs) contains them; random 404s create no new metric series."""

from __future__ import annotations

import json
import secrets as random_tokens
from typing import Any

from tests.otlp_receiver import running_receiver
from tests.reliability import FIGURES, log_text
from tests.servers import GunicornServer, otel_env

SECRETS = {
    "query string": "qs-secret-e1f2",
    "cookie": "cookie-secret-a9b8",
    "Authorization": "auth-secret-7c7c",
    "form body": "form-secret-3d3d",
    "JSON body": "json-secret-5a5a",
    "SQL parameter": "sqlparam-secret-4b4b",
    "custom header": "header-secret-6e6e",
}
ROUTES = ["/hello", "/db", "/stream", "/items/3/", "/deferred", "/cached", "/download",
          "/boom", "/t/secret", "/t/slow-view?ms=1", "/t/slow-template?ms=1",
          "/t/slow-query?ms=1", "/t/slow-stream?ms=1", "/t/slow-close?ms=1",
          "/no/such/page"]  # fmt: skip


def _requests(server: GunicornServer) -> int:
    headers = {"Cookie": f"sessionid={SECRETS['cookie']}",
               "Authorization": f"Bearer {SECRETS['Authorization']}",
               "X-Api-Key": SECRETS["custom header"]}  # fmt: skip
    sent = 0
    for route in ROUTES:
        sep = "&" if "?" in route else "?"
        server.request(f"{route}{sep}token={SECRETS['query string']}", headers)
        server.request(f"/t/secret?token={SECRETS['SQL parameter']}", headers)
        sent += 2
    form = {**headers, "Content-Type": "application/x-www-form-urlencoded"}
    server.request("/t/secret", form, "POST", f"password={SECRETS['form body']}".encode())
    body = json.dumps({"password": SECRETS["JSON body"]}).encode()
    server.request("/t/secret", {**headers, "Content-Type": "application/json"}, "POST", body)
    return sent + 2


def _routes_in_metrics(requests: list[Any]) -> set[str]:
    routes = set()
    for request in requests:
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    points = metric.histogram.data_points or metric.sum.data_points
                    for point in points:
                        for kv in point.attributes:
                            if kv.key == "http.route":
                                routes.add(kv.value.string_value)
    return routes


def test_no_planted_secret_in_any_exported_byte_and_no_404_series() -> None:
    with running_receiver() as receiver:
        server = GunicornServer("tests.testproject.wsgi:traced", otel_env(receiver.endpoint))
        server.start()
        try:
            server.wait_ready()
            sent = _requests(server)
            receiver.wait_for(lambda: sum(s.kind == 2 for s in receiver.spans) >= sent)
            receiver.wait_for(lambda: "/t/secret" in _routes_in_metrics(receiver.metric_requests))
            routes_before = _routes_in_metrics(receiver.metric_requests)
            for _ in range(200):  # a scanner probing random paths
                server.request(f"/{random_tokens.token_hex(8)}/{random_tokens.token_hex(4)}")
            count = len(receiver.metric_requests)
            receiver.wait_for(lambda: len(receiver.metric_requests) > count + 2)
        finally:
            server.stop()
        exported = b"".join(receiver.raw) + log_text(server).encode()
        routes_after = _routes_in_metrics(receiver.metric_requests)
    assert b"/t/secret" in exported and len(receiver.raw) > 10  # traffic was exported
    found = [name for name, value in SECRETS.items() if value.encode() in exported]
    assert found == []
    assert routes_after == routes_before, routes_after - routes_before
    assert "(unmatched)" in str(routes_after) or any("unmatched" in r for r in routes_after)
    FIGURES.privacy.append(
        f"{len(SECRETS)} secrets planted ({', '.join(SECRETS)}), {sent + 200} requests over "
        f"{len(ROUTES) + 1} routes, {len(exported)} exported bytes scanned (spans, metrics, "
        f"gunicorn log): {len(found)} found; 200 random 404 paths: "
        f"{len(routes_after - routes_before)} new http.route values"
    )
