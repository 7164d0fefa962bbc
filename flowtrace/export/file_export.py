"""A span exporter that appends OTLP-JSON lines to a local file.

This is the "no collector needed" default of ``make demo`` and
``flowtrace demo``: each export call writes one ``ExportTraceServiceRequest``
as a JSON line, in the OTLP/JSON encoding (hex ids, integer enums), which the
OpenTelemetry Collector's ``otlpjsonfile`` receiver can also read, and which
``flowtrace report`` reads back.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Sequence
from typing import Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

_ID_KEYS = ("traceId", "spanId", "parentSpanId")


def _hex_ids(value: Any) -> None:
    """proto3 JSON writes bytes as base64; OTLP/JSON wants ids as hex."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in _ID_KEYS and isinstance(item, str):
                value[key] = base64.b64decode(item).hex()
            else:
                _hex_ids(item)
    elif isinstance(value, list):
        for item in value:
            _hex_ids(item)


def to_otlp_json(spans: Sequence[ReadableSpan]) -> str:
    message = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
    _hex_ids(message)
    return json.dumps(message, separators=(",", ":"))


class OtlpJsonFileSpanExporter(SpanExporter):
    """Appends each batch as one OTLP-JSON line."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = to_otlp_json(spans) + "\n"
        try:
            with self._lock, open(self.path, "a", encoding="utf-8") as out:
                out.write(line)
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True
