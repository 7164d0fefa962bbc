"""flowtrace's inline root decision equals the SDK sampler's, or is not used."""

from __future__ import annotations

import random
from typing import Any

import pytest
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    ParentBasedTraceIdRatio,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanKind

from flowtrace.export.sampling import root_decider

STANDARD = [
    ParentBased(ALWAYS_ON),
    ParentBased(ALWAYS_OFF),
    ParentBasedTraceIdRatio(0.1),
    ParentBased(TraceIdRatioBased(0.37)),
    ParentBasedTraceIdRatio(0.0),
    ParentBasedTraceIdRatio(1.0),
]


@pytest.mark.parametrize("sampler", STANDARD, ids=lambda s: s.get_description()[:60])
def test_the_inline_decision_equals_should_sample_for_roots(sampler: Sampler) -> None:
    decide = root_decider(sampler)
    assert decide is not None
    rng = random.Random(7)
    trace_ids = [rng.getrandbits(128) for _ in range(5000)] + [1, 2**64 - 1, 2**128 - 1]
    for trace_id in trace_ids:
        expected = sampler.should_sample(None, trace_id, "HTTP", SpanKind.SERVER)
        assert decide(trace_id) is (expected.decision is Decision.RECORD_AND_SAMPLE), trace_id


class OwnLogic(ParentBased):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.DROP)


class OwnRatio(TraceIdRatioBased):
    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_AND_SAMPLE)


@pytest.mark.parametrize(
    "sampler",
    [ALWAYS_ON, TraceIdRatioBased(0.5), OwnLogic(ALWAYS_ON), ParentBased(OwnRatio(0.5))],
    ids=["bare ALWAYS_ON", "bare ratio", "ParentBased subclass", "ratio subclass"],
)
def test_other_samplers_are_always_asked(sampler: Sampler) -> None:
    assert root_decider(sampler) is None
