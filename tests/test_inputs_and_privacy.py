"""Bad input is ignored safely; nothing private is recorded by default."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from flowtrace.export.file_export import to_otlp_json
from tests.wsgi_client import call

SECRETS = {
    "query": "qs-secret-7f3a",
    "cookie": "cookie-secret-91bd",
    "auth": "auth-secret-c0de",
    "form": "form-secret-5e55",
    "sql": "sql-param-secret-ab12",
    "header": "custom-header-secret-77",
    "api_key": "api-key-secret-3c3c",
}


def _exported_text(inproc: Any) -> str:
    spans = inproc.spans()
    metrics = inproc.reader.get_metrics_data()
    return to_otlp_json(spans) + metrics.to_json()


def _secret_requests(app: Any) -> None:
    call(app, "/t/secret", query=f"token={SECRETS['query']}",
         headers={"Cookie": f"sessionid={SECRETS['cookie']}",
                  "Authorization": f"Bearer {SECRETS['auth']}",
                  "X-Tenant": SECRETS["header"], "X-Api-Key": SECRETS["api_key"]})  # fmt: skip
    call(
        app,
        "/t/secret",
        method="POST",
        body=f"password={SECRETS['form']}".encode(),
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    call(app, "/t/secret", query=f"token={SECRETS['sql']}")


def test_no_secret_is_exported_by_default(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    _secret_requests(inproc.app)
    text = _exported_text(inproc)
    assert "/t/secret" in text  # the requests were traced
    assert "SELECT %s" in text  # SQL text without its parameter
    leaked = [name for name, value in SECRETS.items() if value in text]
    assert leaked == []


def test_opt_ins_record_only_what_was_asked(make_inprocess: Any) -> None:
    asked = ["X-Tenant", "X-Api-Key", "Authorization", "Cookie"]
    inproc = make_inprocess(capture_query="redacted", capture_headers=asked)
    _secret_requests(inproc.app)
    text = _exported_text(inproc)
    assert SECRETS["header"] in text  # allow-listed header
    # credential headers: present, never their values, even when asked for
    assert '"http.request.header.x-api-key"' in text and "[REDACTED]" in text
    assert "token=REDACTED" in text  # query keys, values redacted
    leaked = [n for n, v in SECRETS.items() if v in text and n != "header"]
    assert leaked == []
    inproc = make_inprocess(record_sql_parameters=True, capture_query="full")
    call(inproc.app, "/t/secret", query=f"token={SECRETS['sql']}")
    assert text.count(SECRETS["sql"]) == 0
    assert _exported_text(inproc).count(SECRETS["sql"]) >= 2  # query + SQL params


BAD_QUEUE = ["garbage", "t=", "t=-5", "-1700000000", "t=9999999999999999999999", "1e400",
             "t=1700000000.5.5", "\u00e9\u00e9", "t=" + "9" * 100, str(time.time() + 3600),
             str(time.time() - 7200)]  # fmt: skip


@pytest.mark.parametrize("header", BAD_QUEUE)
def test_absurd_queue_headers_are_ignored(make_inprocess: Any, header: str) -> None:
    inproc = make_inprocess(max_queue_time=600)
    result = call(inproc.app, "/hello", headers={"X-Request-Start": header})
    assert result.status == "200 OK"
    assert all(s.attributes.get("flowtrace.stage") != "queue" for s in inproc.spans())


@pytest.mark.parametrize("header", [
    "garbage", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", "00-xyz-abc-01",
    "ff-" + "a" * 32 + "-" + "b" * 16 + "-01", "00-" + "a" * 3000, "",
])  # fmt: skip
def test_bogus_traceparent_starts_a_fresh_trace(make_inprocess: Any, header: str) -> None:
    inproc = make_inprocess()
    result = call(inproc.app, "/hello", headers={"traceparent": header, "baggage": header})
    assert result.status == "200 OK"
    [root] = [s for s in inproc.spans() if s.kind.name == "SERVER"]
    assert root.parent is None


def test_valid_traceparent_is_continued(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    trace_id, parent_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    call(inproc.app, "/hello", headers={"traceparent": f"00-{trace_id}-{parent_id}-01"})
    [root] = [s for s in inproc.spans() if s.kind.name == "SERVER"]
    assert f"{root.context.trace_id:032x}" == trace_id
    assert f"{root.parent.span_id:016x}" == parent_id


def test_hostile_paths_and_huge_headers(make_inprocess: Any) -> None:
    inproc = make_inprocess(max_attribute_length=256)
    call(inproc.app, "/\xff\xfe/bad", headers={"User-Agent": "x" * 100_000})
    headers = {f"X-Junk-{i}": "y" * 100 for i in range(2000)}
    call(inproc.app, "/" + "a" * 50_000, headers=headers)
    roots = [s for s in inproc.spans() if s.kind.name == "SERVER"]
    assert len(roots) == 2
    for root in roots:
        for value in root.attributes.values():
            assert not isinstance(value, str) or len(value) <= 256
    assert "\ufffd" in roots[0].attributes["url.path"]


@pytest.mark.parametrize("method", ["BREW", "get", "M" * 200])
def test_unusual_methods_are_bounded(make_inprocess: Any, method: str) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/t/method/x", method=method)
    [root] = [s for s in inproc.spans() if s.kind.name == "SERVER"]
    assert root.attributes["http.request.method"] == "_OTHER"
    assert root.name.startswith("HTTP ")
    assert len(root.attributes["http.request.method_original"]) <= 32


def test_otlp_json_file_uses_hex_ids(make_inprocess: Any) -> None:
    inproc = make_inprocess()
    call(inproc.app, "/hello")
    line = json.loads(to_otlp_json(inproc.spans()))
    span = line["resourceSpans"][0]["scopeSpans"][0]["spans"][0]
    assert len(span["traceId"]) == 32 and int(span["traceId"], 16)
