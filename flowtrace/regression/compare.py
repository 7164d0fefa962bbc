"""``flowtrace compare``: a verdict per route and metric between two result files.

A timing is *regressed* only when both hold: the shift is significant (its
95 % confidence interval excludes zero) and it is larger than the minimum
effect (``rel`` of the baseline median and ``abs_ms``). Significance alone
would flag every tiny drift of a busy CI machine once samples are large;
effect size alone would flag noise on small samples. Counts (queries,
templates, cache calls) are deterministic, so they are compared exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from statistics import median, median_low
from typing import Any

from flowtrace.regression import InputError
from flowtrace.regression.results import COUNTS, CPU, REQUEST, describe
from flowtrace.regression.scenario import Thresholds
from flowtrace.regression.stats import hodges_lehmann

REGRESSED, IMPROVED, UNCHANGED = "regressed", "improved", "unchanged"
ONLY_BASELINE, ONLY_CURRENT = "only in baseline", "only in current"


@dataclass
class Row:
    route: str
    metric: str  # "request", "cpu", a stage name, or a count name
    kind: str  # "timing" (values in ns) or "count"
    baseline: float
    current: float
    shift: float = 0.0
    low: float = 0.0
    high: float = 0.0
    limit: float = 0.0  # the minimum effect that would be flagged (ns)
    verdict: str = UNCHANGED

    @property
    def relative(self) -> float | None:
        return self.shift / self.baseline if self.baseline else None


@dataclass
class Comparison:
    baseline: str
    current: str
    rows: list[Row] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    speed_factor: float | None = None  # current/baseline machine speed, divided out
    paired: bool = False  # both sides measured together (bench --baseline-output)

    @property
    def regressions(self) -> list[Row]:
        return [row for row in self.rows if row.verdict == REGRESSED]

    @property
    def improvements(self) -> list[Row]:
        return [row for row in self.rows if row.verdict == IMPROVED]

    def as_json(self) -> dict[str, Any]:
        return {
            "baseline": self.baseline,
            "current": self.current,
            "regressed": len(self.regressions),
            "improved": len(self.improvements),
            "speed_factor": self.speed_factor,
            "paired": self.paired,
            "warnings": self.warnings,
            "rows": [asdict(row) | {"relative": row.relative} for row in self.rows],
        }


def _metric_order(name: str) -> tuple[int, str]:
    return ({REQUEST: 0, CPU: 1}.get(name, 2), name)


def timing_row(route: str, metric: str, base: list[float], cur: list[float],
               rel: float, abs_ms: float) -> Row:  # fmt: skip
    shift, low, high = hodges_lehmann(base, cur)
    base_median = median(base)
    limit = max(rel * base_median, abs_ms * 1e6)
    verdict = UNCHANGED
    if low > 0 and shift > limit:
        verdict = REGRESSED
    elif high < 0 and -shift > limit:
        verdict = IMPROVED
    return Row(route, metric, "timing", base_median, median(cur), shift, low, high, limit, verdict)


def count_row(route: str, metric: str, base: list[int], cur: list[int]) -> Row:
    b, c = median_low(base), median_low(cur)
    verdict = REGRESSED if c > b else IMPROVED if c < b else UNCHANGED
    return Row(route, metric, "count", b, c, c - b, c - b, c - b, 0, verdict)


def speed_factor(baseline: dict[str, Any], current: dict[str, Any]) -> float | None:
    """How much slower the machine ran the current side (from the calibration)."""
    base, cur = baseline.get("calibration_ns"), current.get("calibration_ns")
    if not base or not cur:
        return None
    return float(median(cur) / median(base))


def _normalised(values: list[float], entry: dict[str, Any], segments: list[float],
                reference: float, fallback: float) -> list[float]:  # fmt: skip
    """Each sample divided by the speed of the process (segment) that measured it,
    relative to ``reference``, so that one disturbed process corrects itself instead
    of skewing a whole side; without segments, one ``fallback`` factor for the side."""
    index = entry.get("segment")
    if segments and index and len(index) == len(values):
        return [v * reference / segments[i] for v, i in zip(values, index, strict=True)]
    return values if fallback == 1.0 else [v * fallback for v in values]


def compare(
    baseline: dict[str, Any],
    current: dict[str, Any],
    names: tuple[str, str],
    thresholds: Thresholds,
    allow_missing: bool = False,
    normalise: bool = True,
) -> Comparison:
    """Compare two loaded result files (see ``results.load``).

    With ``normalise``, results that were not measured as a pair have the
    machine's speed divided out, per process where the files say which process
    measured what (see ``flowtrace.regression.calibration``).
    """
    out = Comparison(*names)
    out.paired = bool(baseline.get("pair_id")) and baseline.get("pair_id") == current.get("pair_id")
    factor = speed_factor(baseline, current) if normalise and not out.paired else None
    out.speed_factor = factor
    base_segments: list[float] = []
    cur_segments: list[float] = []
    reference = 1.0
    if factor and baseline.get("segment_calibration_ns") and current.get("segment_calibration_ns"):
        base_segments = baseline["segment_calibration_ns"]
        cur_segments = current["segment_calibration_ns"]
        reference = median(base_segments)
    cur_fallback = 1 / factor if factor else 1.0
    base_routes, cur_routes = baseline["routes"], current["routes"]
    for route in sorted(set(base_routes) ^ set(cur_routes)):
        side, name = (ONLY_BASELINE, names[0]) if route in base_routes else (ONLY_CURRENT, names[1])
        if not allow_missing:
            raise InputError(f"{name}: route {route!r} is {side}; pass --allow-missing to compare")
        out.rows.append(Row(route, REQUEST, "timing", 0, 0, verdict=side))
    base_env, cur_env = baseline.get("environment", {}), current.get("environment", {})
    for key in ("python", "django", "cpu", "cpu_count"):
        if base_env.get(key) != cur_env.get(key):
            out.warnings.append(
                f"different {key}: baseline {base_env.get(key)!r}, current {cur_env.get(key)!r}"
            )
    for route in sorted(set(base_routes) & set(cur_routes)):
        b, c = base_routes[route], cur_routes[route]
        for metric in sorted(set(b["timings_ns"]) | set(c["timings_ns"]), key=_metric_order):
            rel, abs_ms = thresholds.for_metric(route, metric)
            base_values = _normalised(b["timings_ns"].get(metric) or [0], b, base_segments,
                                      reference, 1.0)  # fmt: skip
            cur_values = _normalised(c["timings_ns"].get(metric) or [0], c, cur_segments,
                                     reference, cur_fallback)  # fmt: skip
            out.rows.append(timing_row(route, metric, base_values, cur_values, rel, abs_ms))
        for metric in COUNTS:
            if metric in b.get("counts", {}) and metric in c.get("counts", {}):
                out.rows.append(count_row(route, metric, b["counts"][metric], c["counts"][metric]))
    if out.warnings:
        out.warnings.insert(0, f"baseline: {describe(base_env)}; current: {describe(cur_env)}")
    return out
