"""What Django sites do with PostgreSQL: the ORM, server-side cursors,
transactions, psycopg's own SQL composition, a failing query, a second alias."""

from __future__ import annotations

from django.db import DatabaseError, connection, connections, transaction
from django.db.models import F
from django.http import HttpRequest, HttpResponse
from psycopg import sql

from flowtrace.demo.models import Item


def orm(request: HttpRequest) -> HttpResponse:
    cheap = list(Item.objects.filter(price__gt=0).order_by("pk")[:3])
    streamed = sum(1 for _ in Item.objects.order_by("pk").iterator(chunk_size=5))  # named cursor
    with transaction.atomic():
        Item.objects.filter(pk=cheap[0].pk).update(price=F("price"))
    return HttpResponse(f"{len(cheap)} {streamed} {len(connection.execute_wrappers)}",
                        content_type="text/plain")  # fmt: skip


def composed(request: HttpRequest) -> HttpResponse:
    with connection.cursor() as cursor:
        cursor.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("demo_item")))
        (count,) = cursor.fetchone()
        cursor.execute(b"SELECT 1")
        cursor.execute(
            sql.SQL("SELECT count(*) FROM {} WHERE name = {}").format(
                sql.Identifier("demo_item"), sql.Literal("alice@example.com")
            )
        )
    return HttpResponse(str(count), content_type="text/plain")


def fail(request: HttpRequest) -> HttpResponse:
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_here")
    except DatabaseError:
        return HttpResponse("handled", content_type="text/plain")
    return HttpResponse("?", content_type="text/plain")


def other(request: HttpRequest) -> HttpResponse:
    count = Item.objects.using("other").count()
    return HttpResponse(f"{count} {len(connections['other'].execute_wrappers)}",
                        content_type="text/plain")  # fmt: skip
