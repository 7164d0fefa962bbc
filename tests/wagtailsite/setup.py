"""Migrate and build the site: a home page with three breads and two posts."""

from __future__ import annotations

import os


def prepare() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.wagtailsite.settings")
    import django

    django.setup()
    from django.core.management import call_command
    from wagtail.models import Page, Site

    from tests.wagtailsite.models import BlogPage, BreadPage, HomePage

    call_command("makemigrations", "bakery", verbosity=0, interactive=False)
    call_command("migrate", verbosity=0, interactive=False)
    if HomePage.objects.exists():
        return
    root = Page.get_first_root_node()
    home = root.add_child(instance=HomePage(title="Bakery", slug="bakery"))
    for name in ("Sourdough", "Rye", "Baguette"):
        home.add_child(instance=BreadPage(title=name, slug=name.lower(), origin="here"))
    for index in (1, 2):
        home.add_child(instance=BlogPage(title=f"Post {index}", slug=f"post-{index}"))
    Site.objects.all().delete()
    Site.objects.create(hostname="testserver", port=80, root_page=home, is_default_site=True)
