"""How fast is this machine right now? A fixed workload, timed between requests.

Shared CI machines drift by tens of percent between two runs (CPU frequency,
noisy neighbours), and uniformly across routes. ``compare`` divides that
drift out with the ratio of the two runs' calibration medians. The workload
is a Django template render when Django is configured, because it stresses
the interpreter the way a request does (measured on the demo: run-to-run
spread of a route's median falls from ~15 % raw to ~3 % normalised, against
~5 % with a plain dict/sort workload); otherwise a pure-Python fallback.
"""

from __future__ import annotations

from collections.abc import Callable
from time import perf_counter_ns
from typing import Any

_SOURCE = "{% for x in items %}<li>{{ x.name|upper }} {{ x.price }}</li>{% endfor %}"
_ITEMS = [{"name": f"item {i}", "price": i} for i in range(30)]


def _python() -> int:
    t0 = perf_counter_ns()
    table: dict[str, list[Any]] = {}
    for i in range(200):
        table[f"key{i}"] = [i, str(i), (i, i * 2)]
    ordered = sorted(table.items(), key=lambda kv: -kv[1][0])
    "".join(value[1] for _, value in ordered)
    return perf_counter_ns() - t0


def workload() -> Callable[[], int]:
    """A function returning the workload's duration in ns."""
    try:
        from django.template import Context, Engine

        template = Engine().from_string(_SOURCE)
        context = Context({"items": _ITEMS})
    except Exception:  # Django missing or unusable: the pure-Python workload
        return _python

    def django_template() -> int:
        t0 = perf_counter_ns()
        template.render(context)
        return perf_counter_ns() - t0

    return django_template
