"""Create and seed the demo database (idempotent); run before serving."""

from __future__ import annotations

import os


def prepare(items: int = 20) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "flowtrace.demo.settings")
    import django

    django.setup()
    from django.core.management import call_command

    from flowtrace.demo.models import Item

    call_command("migrate", verbosity=0, interactive=False)
    if not Item.objects.exists():
        Item.objects.bulk_create(Item(name=f"item {i}", price=i * 3) for i in range(1, items + 1))


if __name__ == "__main__":
    prepare()
