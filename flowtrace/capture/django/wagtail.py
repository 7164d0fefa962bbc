"""Wagtail serves every page through one catch-all URL pattern: named by the
pattern, every page, redirect and 404 would be one route. When Wagtail is
installed, its ``before_serve_page`` hook names a served page's request by its
page type, ``wagtail:<app_label>.<Model>`` (``wagtail:breads.BreadPage``), the
form Django's own model labels take. A request the catch-all answered without
a page (a 404) has no route (see ``flowtrace.build.outcome.route_of``). A
``route_resolver`` of your own still wins.
"""

from __future__ import annotations

from typing import Any

from flowtrace.capture.timeline import current

#: The view behind Wagtail's catch-all pattern.
SERVE_VIEW = "wagtail.views.serve"


def _name_page(page: Any, request: Any, serve_args: Any, serve_kwargs: Any) -> None:
    """``before_serve_page``: record the page type (returning None lets Wagtail serve)."""
    tl = current.get()
    if tl is None or tl.route:
        return None
    try:
        model = page.specific_class or type(page)
        tl.route = "wagtail:" + model._meta.label
    except Exception:  # a page whose model is gone: the route stays the pattern's
        pass
    return None


def install() -> bool:
    """Register the hook if Wagtail is an installed app; True if registered."""
    try:
        from django.apps import apps

        if not apps.is_installed("wagtail"):
            return False
        from wagtail import hooks
    except ImportError:
        return False
    registered = [fn for fn, _ in getattr(hooks, "_hooks", {}).get("before_serve_page", [])]
    if _name_page not in registered:
        hooks.register("before_serve_page", _name_page)
    return True


def uninstall() -> None:
    try:
        from wagtail import hooks
    except ImportError:
        return
    table = getattr(hooks, "_hooks", {})
    if "before_serve_page" in table:
        table["before_serve_page"] = [(fn, order) for fn, order in table["before_serve_page"]
                                      if fn is not _name_page]  # fmt: skip
