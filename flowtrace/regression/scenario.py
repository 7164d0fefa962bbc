"""The scenario file: which requests to replay, how often, and compare thresholds.

TOML (always) or YAML (when PyYAML is installed), for example::

    [scenario]
    django_settings = "mysite.settings"   # default: $DJANGO_SETTINGS_MODULE
    test_database = true                  # bench against fresh test databases
    setup = "mysite.bench:load_fixtures"  # optional callable, run once per process
    warmup = 3                            # untimed rounds
    rounds = 20                           # timed rounds, interleaved

    [compare]
    rel = 0.10      # minimum relative change to flag
    abs_ms = 0.05   # ... and minimum absolute change

    [[compare.override]]
    route = "GET /search"   # fnmatch patterns
    stage = "view"
    rel = 0.25

    [[request]]
    path = "/orders/1/"
    repeat = 5     # per round
    status = 200   # expected status (or a list); default: any 2xx or 3xx

An unknown key anywhere is an error that names the closest valid one, so a
typo (``reapeat``) cannot silently fall back to a default.
"""

from __future__ import annotations

import difflib
import fnmatch
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from flowtrace.regression import InputError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}
_KEYS = {
    "": ("scenario", "compare", "request"),
    "scenario": ("django_settings", "application", "setup", "test_database", "warmup", "rounds"),
    "compare": ("rel", "abs_ms", "override"),
    "compare.override": ("route", "stage", "rel", "abs_ms"),
    "request": ("method", "path", "headers", "body", "repeat", "status"),
}


def _known_keys(where: str, table: Mapping[str, Any], kind: str) -> None:
    """An unknown key is an error naming the closest valid key."""
    valid = _KEYS[kind]
    for key in table:
        if key not in valid:
            close = difflib.get_close_matches(str(key), valid, n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; valid: {', '.join(valid)}"
            name = f"[{kind}]" if kind and kind != "request" else "[[request]]"
            place = f"{where}: unknown key {key!r}" + (f" in {name}" if kind else " at the top")
            raise InputError(place + hint)


@dataclass(frozen=True)
class RequestSpec:
    method: str
    path: str
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    repeat: int = 1
    status: tuple[int, ...] = ()  # expected; empty: any 2xx or 3xx

    def expects(self, status: int) -> bool:
        return status in self.status if self.status else 200 <= status < 400

    def expected(self) -> str:
        return " or ".join(map(str, self.status)) if self.status else "2xx or 3xx"


@dataclass(frozen=True)
class Thresholds:
    """When a change is big enough to matter: both relative and absolute."""

    rel: float = 0.10
    abs_ms: float = 0.05
    overrides: tuple[dict[str, Any], ...] = ()

    def for_metric(self, route: str, stage: str) -> tuple[float, float]:
        rel, abs_ms = self.rel, self.abs_ms
        for rule in self.overrides:
            if fnmatch.fnmatchcase(route, rule.get("route", "*")) and fnmatch.fnmatchcase(
                stage, rule.get("stage", "*")
            ):
                rel = float(rule.get("rel", rel))
                abs_ms = float(rule.get("abs_ms", abs_ms))
        return rel, abs_ms

    def as_json(self) -> dict[str, Any]:
        return {"rel": self.rel, "abs_ms": self.abs_ms, "overrides": list(self.overrides)}


@dataclass(frozen=True)
class Scenario:
    path: str
    requests: tuple[RequestSpec, ...]
    django_settings: str | None = None
    application: str | None = None
    setup: str | None = None
    test_database: bool = False
    warmup: int = 3
    rounds: int = 20
    thresholds: Thresholds = field(default_factory=Thresholds)


def _read(path: Path) -> Mapping[str, Any]:
    text = path.read_text(encoding="utf-8")
    if path.suffix in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise InputError(f"{path}: YAML scenarios need PyYAML (pip install pyyaml)") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from None
    else:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise InputError(f"{path}: not valid TOML: {exc}") from None
    if not isinstance(data, Mapping):
        raise InputError(f"{path}: expected a table at the top level")
    return data


def _int(where: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{where} must be an integer >= {minimum}, not {value!r}")
    return value


def _number(where: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
        raise InputError(f"{where} must be a number >= 0, not {value!r}")
    return float(value)


def _statuses(where: str, raw: Any) -> tuple[int, ...]:
    values = raw if isinstance(raw, list) else [raw]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and 100 <= v <= 599
                             for v in values):  # fmt: skip
        raise InputError(f"{where} must be an HTTP status (100-599) or a list of them, not {raw!r}")
    return tuple(values)


def _request(where: str, raw: Any) -> RequestSpec:
    if not isinstance(raw, Mapping):
        raise InputError(f"{where} must be a table")
    _known_keys(where, raw, "request")
    path = raw.get("path")
    if not isinstance(path, str) or not path.startswith("/"):
        raise InputError(f"{where}.path must be a string starting with '/', not {path!r}")
    method = str(raw.get("method", "GET")).upper()
    if method not in _METHODS:
        raise InputError(f"{where}.method {method!r} is not one of {sorted(_METHODS)}")
    headers = raw.get("headers", {})
    if not isinstance(headers, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
    ):
        raise InputError(f"{where}.headers must map header names to strings")
    body = raw.get("body", "")
    if not isinstance(body, str):
        raise InputError(f"{where}.body must be a string")
    repeat = _int(f"{where}.repeat", raw.get("repeat", 1), 1)
    status = _statuses(f"{where}.status", raw["status"]) if "status" in raw else ()
    return RequestSpec(method, path, tuple(headers.items()), body.encode(), repeat, status)


def _thresholds(path: Path, raw: Any) -> Thresholds:
    if raw is None:
        return Thresholds()
    if not isinstance(raw, Mapping):
        raise InputError(f"{path}: [compare] must be a table")
    _known_keys(str(path), raw, "compare")
    overrides = raw.get("override", [])
    if not isinstance(overrides, list) or not all(isinstance(o, Mapping) for o in overrides):
        raise InputError(f"{path}: compare.override must be a list of tables")
    for i, rule in enumerate(overrides):
        _known_keys(f"{path}: compare.override[{i}]", rule, "compare.override")
        for key in ("rel", "abs_ms"):
            if key in rule:
                _number(f"{path}: compare.override[{i}].{key}", rule[key])
    return Thresholds(
        _number(f"{path}: compare.rel", raw.get("rel", 0.10)),
        _number(f"{path}: compare.abs_ms", raw.get("abs_ms", 0.05)),
        tuple(dict(o) for o in overrides),
    )


def load(path_str: str) -> Scenario:
    """Parse and validate a scenario file; InputError names the file and the problem."""
    path = Path(path_str)
    try:
        data = _read(path)
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror}") from None
    _known_keys(str(path), data, "")
    head = data.get("scenario", {})
    if not isinstance(head, Mapping):
        raise InputError(f"{path}: [scenario] must be a table")
    _known_keys(str(path), head, "scenario")
    raw_requests = data.get("request")
    if not isinstance(raw_requests, list) or not raw_requests:
        raise InputError(f"{path}: needs at least one [[request]]")
    requests = tuple(_request(f"{path}: request[{i}]", r) for i, r in enumerate(raw_requests))
    strings = {}
    for key in ("django_settings", "application", "setup"):
        value = head.get(key)
        if value is not None and not isinstance(value, str):
            raise InputError(f"{path}: scenario.{key} must be a string")
        strings[key] = value
    test_database = head.get("test_database", False)
    if not isinstance(test_database, bool):
        raise InputError(f"{path}: scenario.test_database must be true or false")
    return Scenario(
        path=str(path),
        requests=requests,
        warmup=_int(f"{path}: scenario.warmup", head.get("warmup", 3), 0),
        rounds=_int(f"{path}: scenario.rounds", head.get("rounds", 20), 2),
        thresholds=_thresholds(path, data.get("compare")),
        test_database=test_database,
        **strings,
    )


def with_rounds(scenario: Scenario, rounds: int) -> Scenario:
    return replace(scenario, rounds=_int("--rounds", rounds, 2))
