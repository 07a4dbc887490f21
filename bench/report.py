"""Figures, scenarios and the run's report: the aligned table and the JSON document."""

from __future__ import annotations

import json
import math
import operator
import os
from dataclasses import asdict, dataclass, field

STATUS_OK = "ok"
STATUS_SKIPPED = "skipped"
STATUS_FAILED = "failed"

_COMPARE = {">=": operator.ge, "<=": operator.le}


@dataclass(frozen=True)
class Budget:
    """A limit from DESIGN.md. ``on`` says what is compared: the figure's value or its
    ratio to the baseline."""

    op: str        # ">=" or "<="
    limit: float
    on: str = "value"   # "value" | "ratio"

    def check(self, value: float | None, ratio: float | None) -> bool | None:
        subject = ratio if self.on == "ratio" else value
        if subject is None or (isinstance(subject, float) and math.isnan(subject)):
            return None
        return _COMPARE[self.op](subject, self.limit)

    def __str__(self) -> str:
        limit = f"{self.limit:g}"
        return f"{self.op} {limit}x" if self.on == "ratio" else f"{self.op} {limit}"


@dataclass
class Figure:
    name: str
    value: float | None
    unit: str
    baseline: float | None = None
    baseline_name: str | None = None
    budget: Budget | None = None
    details: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.baseline:
            return None
        return self.value / self.baseline

    @property
    def passed(self) -> bool | None:
        return self.budget.check(self.value, self.ratio) if self.budget else None

    def as_dict(self) -> dict:
        return {"name": self.name, "value": self.value, "unit": self.unit,
                "baseline": self.baseline, "baseline_name": self.baseline_name,
                "ratio": self.ratio, "budget": str(self.budget) if self.budget else None,
                "budget_detail": asdict(self.budget) if self.budget else None,
                "passed": self.passed, "details": self.details}


@dataclass
class Scenario:
    name: str
    status: str = STATUS_OK
    reason: str | None = None
    figures: list[Figure] = field(default_factory=list)
    runs: list[dict] = field(default_factory=list)   # raw measurements (wrk runs, samples)
    seconds: float = 0.0

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def skip(self, reason: str) -> "Scenario":
        self.status, self.reason = STATUS_SKIPPED, reason
        return self

    def fail(self, reason: str) -> "Scenario":
        self.status, self.reason = STATUS_FAILED, reason
        return self

    def as_dict(self) -> dict:
        return {"name": self.name, "status": self.status, "reason": self.reason,
                "seconds": round(self.seconds, 1),
                "figures": [f.as_dict() for f in self.figures], "runs": self.runs}


def _fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    magnitude = abs(value)
    if magnitude >= 100 or float(value).is_integer():
        return f"{value:,.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 0.1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _verdict(passed: bool | None) -> str:
    return {True: "pass", False: "FAIL", None: ""}[passed]


HEADERS = ("scenario", "figure", "value", "unit", "baseline", "ratio", "budget", "result")
_RIGHT = {2, 4, 5}


def table(scenarios: list[Scenario]) -> str:
    """The plain-text table: one line per figure, skipped scenarios with their reason."""
    rows: list[tuple[str, ...]] = []
    notes: list[str] = []
    for sc in scenarios:
        if sc.status != STATUS_OK:
            notes.append(f"{sc.name}: {sc.status.upper()}: {sc.reason}")
        for f in sc.figures:
            ratio = f.ratio
            rows.append((sc.name, f.name, _fmt(f.value), f.unit,
                         f"{_fmt(f.baseline)} {f.baseline_name}" if f.baseline is not None else "",
                         f"{ratio:.2f}x" if ratio is not None else "",
                         str(f.budget) if f.budget else "", _verdict(f.passed)))
        if sc.status != STATUS_OK and not sc.figures:
            rows.append((sc.name, f"({sc.status}: see below)", "", "", "", "", "", sc.status))
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(HEADERS)]

    def line(cells) -> str:
        out = [c.rjust(widths[i]) if i in _RIGHT else c.ljust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(out).rstrip()

    lines = [line(HEADERS), line(tuple("-" * w for w in widths))]
    lines += [line(r) for r in rows]
    if notes:
        lines.append("")
        lines += notes
    return "\n".join(lines)


RUN_HEADERS = ("scenario", "server", "request", "servers", "w", "c", "req/s", "p50 ms", "p99 ms",
               "p99.9 ms", "errors", "wrk cpu", "server cpu")


def runs_table(scenarios: list[Scenario]) -> str:
    """Every wrk run of the read scenarios: the raw figures behind the ratios, with wrk's
    own CPU use (near 100% of a core would mean the generator, not the server, limits) and
    the server processes' (percent of one core: 200% is both cores of a 2-core machine)."""
    rows = []
    for sc in scenarios:
        for run in sc.runs:
            if run.get("kind") != "wrk":
                continue
            rows.append((sc.name, run["server"], run["label"], f"{run['servers']:,}",
                         str(run["workers"]), str(run["connections"]), _fmt(run["requests_per_s"]),
                         _fmt(run["p50_ms"]), _fmt(run["p99_ms"]), _fmt(run["p999_ms"]),
                         str(run["error_count"]), f"{run['wrk_cpu_pct']:.0f}%",
                         f"{run['server_cpu_pct']:.0f}%" if run.get("server_cpu_pct") is not None
                         else "-"))
    if not rows:
        return ""
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(RUN_HEADERS)]
    right = set(range(3, len(RUN_HEADERS)))

    def line(cells) -> str:
        return "  ".join(c.rjust(widths[i]) if i in right else c.ljust(widths[i])
                         for i, c in enumerate(cells)).rstrip()

    return "\n".join([line(RUN_HEADERS), line(tuple("-" * w for w in widths))] + [line(r) for r in rows])


def summary(scenarios: list[Scenario]) -> dict:
    figures = [f for sc in scenarios for f in sc.figures if f.budget]
    return {"budgets": len(figures),
            "passed": sum(1 for f in figures if f.passed is True),
            "failed": [f.name for f in figures if f.passed is False],
            "skipped_scenarios": [sc.name for sc in scenarios if sc.status == STATUS_SKIPPED],
            "failed_scenarios": [sc.name for sc in scenarios if sc.status == STATUS_FAILED]}


def write_json(path: str, document: dict) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(document, f, indent=2, sort_keys=False, default=str)
        f.write("\n")
    os.replace(tmp, path)
