"""Readable, low-cardinality names: routes (``http.route``) and views.

Django's ``ResolverMatch.route`` joins every pattern on the way to the view:
``path()`` syntax (``items/<int:pk>/``) as written, ``re_path()`` patterns as
regexes (``^items/(?P<pk>[^/.]+)/$``, which Django REST framework's routers
build for every viewset). A regex becomes a URL template in the ``{name}``
style the HTTP semantic conventions use (``/items/{pk}/``) when the rest of
it is plain text; otherwise it is reported as the regex, without a slash
glued in front. Results are cached: a route string maps to one name.
"""

from __future__ import annotations

import re
from functools import lru_cache, partial
from typing import Any

_REGEX_HINTS = frozenset("^$()\\[]*+?|{}")
_LITERAL_ESCAPES = re.compile(r"\\([./\-_~:@!&=,;%#])")
_GROUP = re.compile(r"\((\?P<(\w+)>|\?:|(?!\?))")


def _groups_to_names(regex: str) -> str | None:
    """Replace every top-level capture group by ``{name}`` (``{0}``, ``{1}`` for
    unnamed ones); None if a group is not balanced or is a non-capturing one
    followed by a quantifier we cannot render."""
    out: list[str] = []
    position = 0
    unnamed = 0
    while position < len(regex):
        char = regex[position]
        if char == "\\":
            out.append(regex[position : position + 2])
            position += 2
            continue
        if char != "(":
            out.append(char)
            position += 1
            continue
        match = _GROUP.match(regex, position)
        if match is None or match.group(1) == "?:":
            return None  # lookarounds, flags, non-capturing groups: not a template
        depth = 0
        end = position
        while end < len(regex):
            if regex[end] == "\\":
                end += 2
                continue
            if regex[end] == "(":
                depth += 1
            elif regex[end] == ")":
                depth -= 1
                if depth == 0:
                    break
            end += 1
        if depth != 0:
            return None
        if end + 1 < len(regex) and regex[end + 1] in "*+?{":
            return None  # an optional or repeated group
        name = match.group(2)
        if name is None:
            name = str(unnamed)
            unnamed += 1
        out.append("{" + name + "}")
        position = end + 1
    return "".join(out)


@lru_cache(maxsize=4096)
def render_route(route: str) -> str:
    """``http.route`` for a Django route string (see the module docstring)."""
    if not _REGEX_HINTS.intersection(route):
        return "/" + route  # path() syntax
    body = route.removeprefix("^")
    body = body.removesuffix("\\Z").removesuffix("$")
    template = _groups_to_names(body)
    if template is not None:
        plain = _LITERAL_ESCAPES.sub(r"\1", template)
        # what is left outside {name} must be literal text ("." read as a dot)
        if not _REGEX_HINTS.intersection(re.sub(r"\{\w+\}", "", plain)):
            return "/" + plain
    return route


def _qualified(obj: Any) -> str:
    qualname = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
    if qualname is None:  # an instance of a callable class
        obj = type(obj)
        qualname = obj.__qualname__
    return f"{getattr(obj, '__module__', None) or '?'}.{qualname.replace('.<locals>', '')}"


@lru_cache(maxsize=4096)
def _view_name(view: Any, method: str) -> str:
    while isinstance(view, partial):
        view = view.func
    actions = getattr(view, "actions", None)  # a DRF viewset: {"get": "retrieve", ...}
    cls = getattr(view, "cls", None) or getattr(view, "view_class", None)
    if cls is not None:
        name = _qualified(cls)
        if isinstance(actions, dict):
            action = actions.get(method.lower())
            return f"{name}.{action}" if action else name
        handler = method.lower()
        if handler == "head" and not hasattr(cls, "head"):
            handler = "get"  # as Django's View.setup() does
        return f"{name}.{handler}" if hasattr(cls, handler) else name
    return _qualified(view)


def view_name(view: Any, method: str) -> str | None:
    """The view's dotted name: ``pkg.views.ItemViewSet.retrieve`` for a DRF
    viewset action, ``pkg.views.Page.get`` for a class-based view, the
    function's qualified name otherwise (admin views: ``AdminSite.index``)."""
    if view is None:
        return None
    try:
        return _view_name(view, method)
    except TypeError:  # unhashable: not cached
        return _view_name.__wrapped__(view, method)
    except Exception:
        return None
