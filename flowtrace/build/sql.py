"""Database calls as the OpenTelemetry database conventions name them.

Runs on the exporter thread. A query object is turned into text the way its
adapter renders it (psycopg's ``sql.Composed`` through ``as_string()``, bytes
decoded), and nothing here raises: an odd value costs at most its own text,
never the request's metrics.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from flowtrace import semconv as sc

# db.system.name -> the older db.system value, kept for existing dashboards
_LEGACY_SYSTEMS = {"oracle.db": "oracle", "microsoft.sql_server": "mssql"}
_STATEMENTS = frozenset(("SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE"))
_WORD = re.compile(r"[A-Za-z]+")


def query_text(sql: Any, literals: bool = False) -> str:
    """The SQL text of whatever was passed to ``cursor.execute()``.

    psycopg's ``sql.Literal`` values are data (an e-mail address in a WHERE
    clause): they become ``%s`` unless ``literals`` (``record_sql_parameters``).
    """
    if type(sql) is str:
        return sql
    try:
        if isinstance(sql, (bytes, bytearray, memoryview)):
            return bytes(sql).decode("utf-8", "replace")
        if getattr(sql, "as_string", None) is not None:  # psycopg 3.2+: no connection needed
            return _composed(sql, literals)
        return str(sql)
    except Exception:  # an adapter that needs a live connection, or a broken __str__
        return f"<{type(sql).__name__}>"


def _composed(part: Any, literals: bool) -> str:
    if type(part).__name__ == "Literal" and not literals:
        return "%s"
    if type(part).__name__ == "Composed" and not literals:
        parts = getattr(part, "_obj", None)  # psycopg's own list of parts
        if not isinstance(parts, list):
            return "<Composed>"  # cannot tell its literals apart: never print them
        return "".join(_composed(p, literals) for p in parts)
    text = part.as_string(None)
    return text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)


def operation_name(sql: str) -> str:
    """The first statement keyword; for a ``WITH`` query, its main statement's.
    Cached for statements of ordinary length (a long ``IN (...)`` list or a
    ``bulk_create`` batch must not pin megabytes in the cache)."""
    return _operation_name(sql) if len(sql) <= 4096 else _operation_name.__wrapped__(sql)


@lru_cache(maxsize=4096)
def _operation_name(sql: str) -> str:
    head = sql.lstrip("( \n\t\r").split(None, 1)
    if not head:
        return ""
    word = head[0].upper()[:32]
    if word != "WITH":
        return word
    depth = 0
    position = 4
    text = sql.lstrip("( \n\t\r")
    while position < len(text):
        char = text[position]
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif char in "'\"":  # skip a quoted literal or identifier
            end = text.find(char, position + 1)
            position = len(text) if end < 0 else end
        elif depth == 0 and char.isalpha():
            match = _WORD.match(text, position)
            if match is not None:
                candidate = match.group().upper()
                if candidate in _STATEMENTS:
                    return candidate
                position = match.end() - 1
        position += 1
    return word


@lru_cache(maxsize=64)
def connection_attributes(alias: str, system: str) -> tuple[tuple[str, Any], ...]:
    """``db.system.name``, ``db.namespace``, ``server.address``/``port`` of a
    connection alias, from Django's settings (never from a live connection)."""
    items: list[tuple[str, Any]] = [
        (sc.DB_SYSTEM, _LEGACY_SYSTEMS.get(system, system)),
        (sc.DB_SYSTEM_NAME, system),
    ]
    try:
        from django.db import connections

        settings = connections.settings[alias]
    except Exception:
        return tuple(items)
    name = settings.get("NAME")
    if name and system != "sqlite":
        items.append((sc.DB_NAMESPACE, str(name)))
    elif name and system == "sqlite":
        items.append((sc.DB_NAMESPACE, str(name).rsplit("/", 1)[-1]))
    host = settings.get("HOST")
    if host and not str(host).startswith("/"):  # a socket path is not an address
        items.append((sc.SERVER_ADDRESS, str(host)))
        port = str(settings.get("PORT") or "")
        if port.isdigit():
            items.append((sc.SERVER_PORT, int(port)))
    if alias != "default":
        items.append((sc.ATTR_DB_ALIAS, alias))
    return tuple(items)
