"""Django's own extension points, timed: per handler (``handler``: middleware,
URL resolution, view) and per process (``calls``: queries, templates, cache)."""
