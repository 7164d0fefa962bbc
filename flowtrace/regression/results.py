"""The bench result file: versioned JSON with samples per route and an
environment fingerprint, so that a comparison can say what it compared."""

from __future__ import annotations

import json
import os
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from flowtrace.regression import InputError

SCHEMA = "flowtrace.bench"
VERSION = 1
COUNTS = ("queries", "templates", "cache_calls")
#: Timing series that are not stages: the whole request and its CPU time.
REQUEST = "request"
CPU = "cpu"


def fingerprint() -> dict[str, Any]:
    from flowtrace import __version__

    try:
        import django

        django_version: str | None = django.get_version()
    except ImportError:
        django_version = None
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "django": django_version,
        "flowtrace": __version__,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
    }


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def new_result(scenario: str, target: str, thresholds: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "scenario": scenario,
        "target": target,
        "environment": fingerprint(),
        "thresholds": thresholds,
        "routes": {},
    }


def save(result: dict[str, Any], path: str) -> None:
    target = Path(path)
    if target.parent != Path():
        target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(target)


def _numbers(where: str, value: Any, integers: bool = False) -> list[Any]:
    kinds = (int,) if integers else (int, float)
    if not isinstance(value, list) or not value:
        raise InputError(f"{where}: empty or missing samples")
    if not all(isinstance(v, kinds) and not isinstance(v, bool) and v >= 0 for v in value):
        raise InputError(f"{where}: samples must be non-negative numbers")
    return value


def load(path: str) -> dict[str, Any]:
    """Read and validate a result file; InputError names the file and the problem."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    if '"resourceSpans"' in text[:4096]:
        raise InputError(f"{path}: this is a span file (OTLP-JSON, from output_file); compare "
                         "takes bench results (from 'flowtrace bench'); 'flowtrace report' "
                         "reads span files")  # fmt: skip
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise InputError(f"{path}: not a JSON file: {exc}") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InputError(f"{path}: not a flowtrace bench result (schema != {SCHEMA!r})")
    if data.get("version") != VERSION:
        raise InputError(
            f"{path}: result schema version {data.get('version')!r}, this flowtrace reads "
            f"version {VERSION}; re-run `flowtrace bench` with the same flowtrace on both sides"
        )
    routes = data.get("routes")
    if not isinstance(routes, dict) or not routes:
        raise InputError(f"{path}: no routes recorded")
    for route, entry in routes.items():
        where = f"{path}: route {route!r}"
        if not isinstance(entry, dict) or not isinstance(entry.get("timings_ns"), dict):
            raise InputError(f"{where}: missing timings_ns")
        if REQUEST not in entry["timings_ns"]:
            raise InputError(f"{where}: missing the {REQUEST!r} timing")
        for name, values in entry["timings_ns"].items():
            _numbers(f"{where} timing {name!r}", values)
        for name, values in entry.get("counts", {}).items():
            _numbers(f"{where} count {name!r}", values, integers=True)
    for key in ("calibration_ns", "segment_calibration_ns"):
        if data.get(key):
            _numbers(f"{path}: {key}", data[key])
    if not isinstance(data.get("environment", {}), dict):
        raise InputError(f"{path}: environment must be an object")
    return data


def describe(env: dict[str, Any]) -> str:
    cpu = f"{env.get('cpu')} x{env.get('cpu_count')}"
    return f"Python {env.get('python')}, Django {env.get('django')}, {cpu}"
