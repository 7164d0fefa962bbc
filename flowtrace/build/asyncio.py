"""An ASGI request's sync<->async crossings, grouped by cause, and its loop figures."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from flowtrace import semconv as sc
from flowtrace.capture.bridge import cause_of
from flowtrace.capture.timeline import Timeline


@dataclass(slots=True)
class AsyncFacts:
    causes: dict[str, list[int]] = field(default_factory=dict)  # cause -> [crossings, wait ns]
    crossings: int = 0
    wait_start: int = 0  # ns, callees waiting to start on the other side
    wait_resume: int = 0  # ns, callers waiting to resume
    held: int | None = None  # ns the request's code held the loop
    longest: int = 0  # ns, its longest single step

    def attributes(self) -> dict[str, Any]:
        """The root span's attributes."""
        attrs: dict[str, Any] = {}
        if self.crossings:
            attrs[sc.ATTR_BRIDGE_CROSSINGS] = self.crossings
            attrs[sc.ATTR_BRIDGE_WAIT] = (self.wait_start + self.wait_resume) / 1e9
            attrs[sc.ATTR_BRIDGE_WAIT_START] = self.wait_start / 1e9
            attrs[sc.ATTR_BRIDGE_WAIT_RESUME] = self.wait_resume / 1e9
            worst, (_, wait) = max(self.causes.items(), key=lambda item: item[1][1])
            attrs[sc.ATTR_BRIDGE_WORST] = worst
            attrs[sc.ATTR_BRIDGE_WORST_WAIT] = wait / 1e9
        if self.held is not None:
            attrs[sc.ATTR_LOOP_HELD] = self.held / 1e9
            attrs[sc.ATTR_LOOP_LONGEST] = self.longest / 1e9
        return attrs


def async_facts(tl: Timeline) -> AsyncFacts | None:
    """None for a request with neither crossings nor loop figures (WSGI)."""
    if tl.crossings is None and tl.loop is None:
        return None
    facts = AsyncFacts()
    for crossing in tl.crossings or ():
        cause = cause_of(crossing, tl.events, tl.layer_names)
        entry = facts.causes.get(cause)
        if entry is None:
            entry = facts.causes[cause] = [0, 0]
        entry[0] += 1
        entry[1] += crossing[4] + crossing[5]
        facts.crossings += 1
        facts.wait_start += crossing[4]
        facts.wait_resume += crossing[5]
    if tl.loop is not None:
        facts.held, facts.longest = tl.loop[0], tl.loop[1]
    return facts
