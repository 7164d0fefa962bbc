"""The direct exporter's sender against real sockets: failures never reach the app."""

from __future__ import annotations

import logging
import time

import pytest

from flowtrace.export.otlp_http import OtlpHttpSender
from tests.otlp_receiver import running_receiver
from tests.prometheus import free_port


def test_unreachable_collector_fails_fast_is_logged_once_and_backs_off(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sender = OtlpHttpSender(f"http://127.0.0.1:{free_port()}/v1/traces", timeout=2)
    with caplog.at_level(logging.WARNING, logger="flowtrace"):
        started = time.monotonic()
        results = [sender.send(b"") for _ in range(50)]
        elapsed = time.monotonic() - started
    assert results == [False] * 50
    assert sender.failures == 1  # the other 49 were dropped during the backoff, unsent
    assert elapsed < 1.0
    assert len([r for r in caplog.records if "failed" in r.getMessage()]) == 1


def test_http_errors_drop_then_export_resumes(caplog: pytest.LogCaptureFixture) -> None:
    with running_receiver() as receiver:
        sender = OtlpHttpSender(receiver.endpoint + "/v1/traces", timeout=2)
        receiver.status = 503
        with caplog.at_level(logging.WARNING, logger="flowtrace"):
            assert sender.send(b"") is False
            receiver.status = 200
            deadline = time.monotonic() + 5  # the first backoff is 0.5 s
            while not sender.send(b""):
                assert time.monotonic() < deadline, "export did not resume"
                time.sleep(0.05)
        messages = [r.getMessage() for r in caplog.records]
        assert any("HTTP 503" in m for m in messages)
        assert any("recovered" in m for m in messages)
        assert len(receiver.raw) == 2  # one refused body, one accepted: nothing in between


def test_headers_and_gzip_from_standard_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_HEADERS", "x-tenant=acme,authorization=Bearer%20t")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")
    with running_receiver() as receiver:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.endpoint)
        sender = OtlpHttpSender()
        assert sender.url == receiver.endpoint + "/v1/traces"
        assert sender._headers["authorization"] == "Bearer t"
        payload = b"\x0a\x00"  # an ExportTraceServiceRequest with one empty ResourceSpans
        assert sender.send(payload)
        assert receiver.raw == [payload]  # sent gzipped; the receiver decompressed it
