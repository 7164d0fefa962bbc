"""A cheap head-sampling decision (and ids) for the common case: a request with no parent.

The SDK's ``should_sample`` costs ~2 µs per request (a parent lookup in the
context, a ``SamplingResult`` with its attributes and trace state). For the
SDK's own standard samplers (``ParentBased`` around ``ALWAYS_ON``,
``ALWAYS_OFF`` or ``TraceIdRatioBased``, which is what ``OTEL_TRACES_SAMPLER``
selects) the answer for a root is a constant or one comparison on the trace
id, so flowtrace computes it inline. Any other sampler, and every request
with a parent, still goes through ``should_sample``.
"""

from __future__ import annotations

from collections.abc import Callable

from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    StaticSampler,
    TraceIdRatioBased,
)

RootDecision = Callable[[int], bool]


def sdk_random_ids(id_generator: object) -> bool:
    """Ids from the SDK's ``RandomIdGenerator``: flowtrace may draw them from
    ``random.getrandbits`` itself, without the generator's Python calls."""
    return type(id_generator) is RandomIdGenerator


def root_decider(sampler: Sampler) -> RootDecision | None:
    """``trace_id -> sampled`` for a parentless request, or None if this sampler
    is not one of the SDK's standard ones (then ask ``should_sample``)."""
    if not isinstance(sampler, ParentBased):
        return None
    if type(sampler).should_sample is not ParentBased.should_sample:
        return None  # a subclass with its own logic
    root = getattr(sampler, "_root", None)
    if isinstance(root, StaticSampler) and type(root).should_sample is StaticSampler.should_sample:
        sampled = getattr(root, "_decision", None) is Decision.RECORD_AND_SAMPLE

        def constant(trace_id: int) -> bool:
            return sampled

        return constant
    if (
        isinstance(root, TraceIdRatioBased)
        and type(root).should_sample is TraceIdRatioBased.should_sample
    ):
        bound, limit = root.bound, root.TRACE_ID_LIMIT

        def ratio(trace_id: int) -> bool:
            return trace_id & limit < bound

        return ratio
    return None
