"""Database behaviour on a real PostgreSQL with psycopg 3, under gunicorn (gthread,
so worker threads open their own connections), exported over real OTLP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.otlp_receiver import Receiver
from tests.postgres import Postgres, binaries, running_postgres
from tests.servers import ROOT, GunicornServer, gunicorn, otel_env
from tests.traces import fetch

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def postgres() -> Iterator[Postgres]:
    if binaries() is None:
        if os.environ.get("CI") == "true":
            pytest.fail("PostgreSQL server binaries missing in CI (scripts/system-deps.sh)")
        pytest.skip("PostgreSQL server binaries not installed (Debian package postgresql)")
    with running_postgres() as server:
        env = {**os.environ, "PYTHONPATH": str(ROOT), "FLOWTRACE_TEST_PG": _server_json(server),
               "DJANGO_SETTINGS_MODULE": "tests.pgproject.settings"}  # fmt: skip
        script = ("import django; django.setup()\n"
                  "from django.core.management import call_command\n"
                  "from flowtrace.demo.models import Item\n"
                  "for alias in ('default', 'other'):\n"
                  "    call_command('migrate', database=alias, verbosity=0)\n"
                  "    Item.objects.using(alias).bulk_create("
                  "Item(name=f'item {i}', price=i) for i in range(1, 13))\n")  # fmt: skip
        subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, check=True, timeout=120)
        yield server


def _server_json(server: Postgres) -> str:
    return json.dumps({"host": server.host, "port": server.port, "user": server.user})


@pytest.fixture(scope="module", params=[0, 60], ids=["CONN_MAX_AGE=0", "CONN_MAX_AGE=60"])
def pg_server(request: Any, postgres: Postgres, receiver: Receiver) -> Iterator[GunicornServer]:
    env = otel_env(receiver.endpoint, FLOWTRACE_TEST_PG=_server_json(postgres),
                   FLOWTRACE_TEST_CONN_MAX_AGE=request.param,
                   DJANGO_SETTINGS_MODULE="tests.pgproject.settings")  # fmt: skip
    args = ("--worker-class", "gthread", "--threads", "4")
    with gunicorn("tests.pgproject.wsgi:application", env, args) as server:
        yield server


def _db_spans(root: Any) -> list[Any]:
    return [s for s in root.walk() if s.stage == "db"]


def test_orm_server_side_cursors_and_transactions(pg_server: GunicornServer, receiver: Receiver,
                                                  postgres: Postgres) -> None:  # fmt: skip
    for _ in range(5):  # several worker threads, several connections
        status, body, root = fetch(pg_server, receiver, "/pg/orm")
        assert status == 200
        cheap, streamed, wrappers = body.split()
        assert (cheap, streamed, wrappers) == (b"3", b"12", b"1")  # only the timer, always
    spans = _db_spans(root)
    operations = [s.attributes["db.operation.name"] for s in spans]
    assert operations.count("SELECT") == 2 and "UPDATE" in operations
    named = [
        s
        for s in spans
        if "ORDER BY" in s.attributes["db.query.text"]
        and "LIMIT" not in s.attributes["db.query.text"]
    ]  # the .iterator() query
    assert len(named) == 1
    first = spans[0].attributes
    assert (first["db.system.name"], first["db.namespace"]) == ("postgresql", "flowtrace")
    assert (first["server.address"], first["server.port"]) == ("127.0.0.1", postgres.port)
    assert "%s" in spans[0].attributes["db.query.text"]  # parameters never inlined


def test_psycopg_composed_and_bytes_queries_become_text(pg_server: GunicornServer,
                                                        receiver: Receiver) -> None:  # fmt: skip
    status, body, root = fetch(pg_server, receiver, "/pg/composed")
    assert (status, body) == (200, b"12")
    texts = [s.attributes["db.query.text"] for s in _db_spans(root)]
    assert texts == [
        'SELECT count(*) FROM "demo_item"',
        "SELECT 1",
        'SELECT count(*) FROM "demo_item" WHERE name = %s',
    ]  # a Literal is data
    assert root.attributes["flowtrace.db.query_count"] == 3


def test_a_failing_query_is_an_error_span(pg_server: GunicornServer, receiver: Receiver) -> None:
    status, body, root = fetch(pg_server, receiver, "/pg/fail")
    assert (status, body) == (200, b"handled")
    [failed] = [s for s in _db_spans(root) if "no_such_table_here" in s.attributes["db.query.text"]]
    assert failed.attributes["error.type"] == "ProgrammingError"
    assert failed.status_code == 2  # ERROR
    assert root.status_code == 0  # the app handled it: the request did not fail


def test_a_second_database_alias(pg_server: GunicornServer, receiver: Receiver) -> None:
    status, body, root = fetch(pg_server, receiver, "/pg/other")
    assert (status, body) == (200, b"12 1")
    [query] = _db_spans(root)
    assert query.attributes["db.namespace"] == "flowtrace_other"
    assert query.attributes["flowtrace.db.alias"] == "other"
