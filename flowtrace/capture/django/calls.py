"""Process-wide Django hooks: database queries, template renders, cache calls.

These run in any thread, so they find their request through the
``flowtrace.capture.timeline.current`` context variable and do nothing outside a
traced request. Each is an install/uninstall pair; installing twice is a
no-op.

* Queries go through Django's public ``connection.execute_wrapper`` hook. The
  timer sits at the *front* of each connection's ``execute_wrappers`` (the
  outermost wrapper), never at the end: Django's ``execute_wrapper()`` context
  manager pops the *last* item on exit, so a user's ``with
  connection.execute_wrapper(...)`` around the moment a connection is opened
  would otherwise pop flowtrace's timer and leave its own wrapper behind.
* Templates and caches have no public hook, so methods are wrapped on the
  class that defines them (``Template``, Django 6's ``PartialTemplate``, and
  for a cache, the backend class or ``BaseCache``), and restored by
  ``uninstall()``. Wrapping ``BaseCache``'s own method where a backend
  inherits it keeps Django 6.1's "was this method overridden?" test (which
  picks the async API's path) answering as before.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from flowtrace.capture.timeline import CACHE, DB, TEMPLATE, clock, current

_lock = threading.Lock()
_restore: list[Callable[[], None]] = []

# Cache methods: reads report hits; the rest are timed only.
_CACHE_READS = ("get", "get_many", "has_key")
_CACHE_OTHERS = (
    "set", "add", "delete", "get_or_set", "set_many", "delete_many",
    "incr", "decr", "touch", "clear",
)  # fmt: skip
_CACHE_METHODS = (*_CACHE_READS, *_CACHE_OTHERS)

# Django's connection.vendor -> db.system.name (OpenTelemetry's database conventions)
_SYSTEMS = {
    "postgresql": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "oracle": "oracle.db",
    "microsoft": "microsoft.sql_server",
}


def db_system(connection: Any) -> str:
    """The ``db.system.name`` of a Django connection (MariaDB told from MySQL)."""
    vendor = connection.vendor
    if vendor == "mysql" and connection.__dict__.get("mysql_is_mariadb"):
        return "mariadb"  # only when Django already knows: never a query from here
    return _SYSTEMS.get(vendor) or str(vendor)


_systems: dict[str, str] = {}  # connection alias -> db.system.name (one lookup per query)


def _system_of(connection: Any) -> str:
    system = db_system(connection)
    if system != "mysql":  # MariaDB may be told apart later, once Django knows
        _systems[connection.alias] = system
    return system


class QueryTimer:
    """A ``connection.execute_wrapper`` that records each query's interval.

    The SQL is kept as given (a ``str``, ``bytes``, or a psycopg ``sql.Composed``);
    it becomes text on the exporter thread (``flowtrace.build.sql``).
    """

    def __call__(self, execute: Any, sql: Any, params: Any, many: bool, context: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return execute(sql, params, many, context)
        t0 = clock()
        error = None
        try:
            return execute(sql, params, many, context)
        except BaseException as exc:
            error = type(exc).__qualname__
            raise
        finally:
            t1 = clock()
            alias = context["connection"].alias
            system = _systems.get(alias) or _system_of(context["connection"])
            kept = params if tl.keep_sql_params else None
            batch = len(params) if many and hasattr(params, "__len__") else 0
            tl.events.append((DB, t0, t1, (sql, alias, system, batch, kept, error)))

    def __repr__(self) -> str:
        return "<flowtrace query timer>"


_TIMER = QueryTimer()


def add_timer(connection: Any) -> None:
    """Put the timer first in this connection's wrappers (once)."""
    wrappers = connection.execute_wrappers
    if not any(isinstance(w, QueryTimer) for w in wrappers):
        wrappers.insert(0, _TIMER)


def _install_queries() -> None:
    from django.db import connections
    from django.db.backends.signals import connection_created

    def on_connection_created(sender: Any, connection: Any, **kwargs: Any) -> None:
        add_timer(connection)

    for connection in connections.all(initialized_only=True):
        add_timer(connection)
    connection_created.connect(on_connection_created, weak=False, dispatch_uid="flowtrace.db")

    def restore() -> None:
        connection_created.disconnect(dispatch_uid="flowtrace.db")
        for connection in connections.all(initialized_only=True):
            connection.execute_wrappers[:] = [
                w for w in connection.execute_wrappers if not isinstance(w, QueryTimer)
            ]

    _restore.append(restore)


def _unnamed(template: Any) -> str:
    """A name for a template made from a string: Django's own debug pages are
    rendered this way (``DEBUG_ENGINE.from_string``)."""
    try:
        from django.views.debug import DEBUG_ENGINE

        if getattr(template, "engine", None) is DEBUG_ENGINE:
            return "<django debug page>"
    except ImportError:  # pragma: no cover - Django without its debug views
        pass
    return "<string>"


def _timed_render(original: Callable[..., Any], partial: bool) -> Callable[..., Any]:
    @functools.wraps(original)
    def render(self: Any, context: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None:
            return original(self, context)
        t0 = clock()
        raised = None
        try:
            return original(self, context)
        except BaseException as exc:
            raised = type(exc).__qualname__
            raise
        finally:
            t1 = clock()
            name = self.name
            if partial:  # Django 6 partials: "page.html#name"
                origin = getattr(self.origin, "template_name", None)
                name = f"{origin}#{name}" if origin else name
            name = name or _unnamed(self)
            tl.events.append((TEMPLATE, t0, t1, name if raised is None else (name, raised)))

    return render


def _install_templates() -> None:
    from django.template import base

    classes = [(base.Template, False)]
    partial_class = getattr(base, "PartialTemplate", None)  # Django >= 6.0
    if partial_class is not None:
        classes.append((partial_class, True))
    for cls, partial in classes:
        original = cls.__dict__["render"]
        cls.render = _timed_render(original, partial)

        def restore(cls: Any = cls, original: Any = original) -> None:
            cls.render = original

        _restore.append(restore)


def _cache_hits(operation: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Any:
    """Hit information for a read: a bool, or (hits, misses) for get_many."""
    if operation == "get":
        default = args[1] if len(args) > 1 else kwargs.get("default")
        return result is not default
    if operation == "has_key":
        return bool(result)
    keys = args[0] if args else kwargs.get("keys", ())
    try:
        wanted = len(keys)
    except TypeError:
        wanted = len(result)
    return (len(result), max(wanted - len(result), 0))


def _hits(operation: str, args: tuple[Any, ...], kwargs: dict[str, Any], result: Any) -> Any:
    """``_cache_hits``, never raising into the app (an odd backend's result)."""
    try:
        return _cache_hits(operation, args, kwargs, result)
    except Exception:
        return None


#: The cache backend whose call is running, per task and thread (asyncio tasks get
#: their own copy, ``sync_to_async`` carries it into its thread): a call it makes on
#: itself (LocMem's ``get_many`` calls ``get``) is part of it, not a new call.
_owner: ContextVar[Any] = ContextVar("flowtrace.cache_owner", default=None)

_backend_names: dict[type, str] = {}


def backend_name(cache: Any) -> str:
    """``locmem``, ``redis``, ``db``...: the backend module's last name."""
    cls = type(cache)
    name = _backend_names.get(cls)
    if name is None:
        name = _backend_names[cls] = cls.__module__.rsplit(".", 1)[-1]
    return name


def _timed_cache_method(original: Callable[..., Any], operation: str) -> Callable[..., Any]:
    is_read = operation in _CACHE_READS
    is_get = operation == "get"
    names = _backend_names

    @functools.wraps(original)
    def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None or _owner.get() is self:  # a call inside a call: part of it
            return original(self, *args, **kwargs)
        token = _owner.set(self)
        t0 = clock()
        hit = None
        try:
            result = original(self, *args, **kwargs)
            if is_get:  # the most frequent call: its hit test inline
                hit = result is not (args[1] if len(args) > 1 else kwargs.get("default"))
            elif is_read:
                hit = _hits(operation, args, kwargs, result)
            return result
        finally:
            t1 = clock()
            _owner.reset(token)
            backend = names.get(type(self)) or backend_name(self)
            tl.events.append((CACHE, t0, t1, (operation, backend, hit)))

    method._flowtrace_original = original  # type: ignore[attr-defined]
    return method


def _timed_async_cache_method(original: Callable[..., Any], operation: str) -> Callable[..., Any]:
    """``aget``, ``aset``...: recorded under the sync operation's name."""
    is_read = operation in _CACHE_READS

    @functools.wraps(original)
    async def method(self: Any, *args: Any, **kwargs: Any) -> Any:
        __traceback_hide__ = True  # noqa: F841 - read by Django's debug page
        tl = current.get()
        if tl is None or _owner.get() is self:
            return await original(self, *args, **kwargs)
        token = _owner.set(self)
        t0 = clock()
        hit = None
        try:
            result = await original(self, *args, **kwargs)
            if is_read:
                hit = _hits(operation, args, kwargs, result)
            return result
        finally:
            t1 = clock()
            _owner.reset(token)
            tl.events.append((CACHE, t0, t1, (operation, backend_name(self), hit)))

    method._flowtrace_original = original  # type: ignore[attr-defined]
    return method


def _defining_class(cls: type, name: str) -> type | None:
    return next((klass for klass in cls.__mro__ if name in klass.__dict__), None)


def _wrap_cache_method(owner: type, name: str, operation: str) -> None:
    original = owner.__dict__[name]
    if getattr(original, "_flowtrace_original", None) is not None:
        return  # already wrapped (another backend sharing this class)
    if name != operation:  # aget, aset...: the async API
        wrapped = _timed_async_cache_method(original, operation)
    else:
        wrapped = _timed_cache_method(original, operation)
    setattr(owner, name, wrapped)

    def restore() -> None:
        setattr(owner, name, original)

    _restore.append(restore)


def _install_caches() -> None:
    from django.conf import settings
    from django.utils.module_loading import import_string

    for alias_config in getattr(settings, "CACHES", {}).values():
        cls = import_string(alias_config["BACKEND"])
        for operation in _CACHE_METHODS:
            for name in (operation, "a" + operation):
                owner = _defining_class(cls, name)
                if owner is not None and owner is not object:
                    _wrap_cache_method(owner, name, operation)


def install() -> None:
    """Install the DB, template and cache hooks (and Wagtail's page names, if
    Wagtail is installed) once per process."""
    with _lock:
        if _restore:
            return
        _install_queries()
        _install_templates()
        _install_caches()
        from flowtrace.capture.django import wagtail

        if wagtail.install():
            _restore.append(wagtail.uninstall)


def uninstall() -> None:
    """Undo ``install()``: for tests, and for apps that unwrap flowtrace."""
    with _lock:
        while _restore:
            _restore.pop()()


def installed() -> bool:
    return bool(_restore)
