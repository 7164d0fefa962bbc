"""A small Django project that shows every flowtrace stage.

Used by ``flowtrace demo``, the benchmarks and the tests. Its routes are the
ones the overhead budget is measured on: ``/hello``, ``/db``, ``/stream``,
``/items/<int:pk>/``, plus a file download, a deferred TemplateResponse, a
cached page and an error.
"""
