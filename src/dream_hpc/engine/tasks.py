"""What a rank computes: a unit's remaining stages or one filter's mosaic, its cost, time limit and resume plan.

A finished unit is recognised on resume by the checksums in its journal records, verified against the
files on disk (on the rank, so hashing is spread over the ranks); a stage counts only if it read exactly
the products the stage before it left.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dream_hpc.config import SurveyConfig
from dream_hpc.core.digests import sha256_file
from dream_hpc.core.rundir import RunDir, RunDirError
from dream_hpc.core.workunit import STAGES, WorkUnit

# Fallback Image3 cost relative to its inputs' estimates (when the cost model cannot size apertures).
MOSAIC_COST_FRACTION = 0.5
# Units with no estimate still need an order and a limit.
DEFAULT_UNIT_COST_S = 60.0


def verify_outputs(run: RunDir, outputs: dict[str, str]) -> bool:
    """Every recorded product exists and has its recorded sha256 (a file merely existing is not enough)."""
    if not outputs:
        return False
    for rel, sha in outputs.items():
        try:
            path = run.inside(rel)
        except RunDirError:
            return False
        if not path.is_file() or sha256_file(path) != sha:
            return False
    return True


@dataclass
class Task:
    """One thing a rank computes: a unit's remaining stages, or one filter's mosaic."""

    key: str  # unit id, or mosaic_<FILTER>
    kind: str  # unit | mosaic
    cost: float  # expected CPU seconds (the plan's estimate): longest first
    limit_s: float  # time limit; over it the worker is killed and the task recorded as timed out
    unit: WorkUnit | None = None
    filter: str | None = None
    units: list[WorkUnit] = field(default_factory=list)  # a mosaic's inputs
    recorded: dict[str, Any] = field(default_factory=dict)  # what earlier attempts journaled
    expected_inputs: dict[str, str] = field(default_factory=dict)  # a mosaic's current *_cal checksums
    verified_stages: list[str] = field(default_factory=list)
    tail: float = 0.0  # expected work that must follow this task (its filter's mosaic)
    verify_only: bool = False  # `dream-hpc mosaic`: check a finished unit, never compute it
    spec: dict[str, Any] = field(default_factory=dict)  # a tiled-mosaic task: phase and what it works on
    after: list[str] = field(default_factory=list)  # keys of tasks that must end first (engine/mosaic_graph.py)

    @property
    def priority(self) -> int:
        """Mosaics first (they end the survey), then quick re-checks of recorded units, then new work."""
        if self.kind == "mosaic":
            return 0
        return 1 if self.recorded.get("done") or self.recorded.get("stages") else 2

    def sort_key(self) -> tuple[int, float, str]:
        """Longest expected path first: the task's own cost plus the mosaic that waits for it, so the
        filter with the longest Image3 finishes its units first and its mosaic overlaps other units."""
        return (self.priority, -(self.cost + self.tail), self.key)

    def stages_expected(self) -> list[str]:
        return list(STAGES) if self.kind == "unit" else ["mosaic"]

    def resume_plan(self, run: RunDir) -> tuple[list[str], dict[str, str]]:
        """(stages still to run, checksums of products verified on disk). Runs on the rank: hashing
        is spread over the ranks instead of serialising on rank 0."""
        self.verified_stages = []
        if self.kind == "mosaic":
            done = self.recorded.get("done") or {}
            # the inputs that decide: *_cal for a single Image3; for a tiled task, its dependencies'
            # products of the kinds it expects (a removed or changed one means recompute)
            kinds = tuple({"_" + p.rsplit("_", 1)[-1] for p in self.expected_inputs}) if self.spec else ("_cal.fits",)
            cal_in = {p: h for p, h in done.get("inputs", {}).items() if p.endswith(kinds)}
            if done and cal_in == self.expected_inputs and verify_outputs(run, done.get("outputs", {})):
                return [], dict(done["outputs"])
            return ["mosaic"], {}
        done = self.recorded.get("done")
        if done and verify_outputs(run, done.get("outputs", {})):
            return [], dict(done["outputs"])
        verified: dict[str, str] = {}
        previous: dict[str, str] | None = None
        for stage in STAGES:
            rec = self.recorded.get("stages", {}).get(stage)
            if not rec or not verify_outputs(run, rec.get("outputs", {})):
                break
            # a stage counts only if it read exactly the products the stage before it left
            if previous is not None and any(previous.get(p, h) != h for p, h in rec.get("inputs", {}).items()):
                break
            verified.update(rec["outputs"])
            previous = rec["outputs"]
            self.verified_stages.append(stage)
        return list(STAGES[len(self.verified_stages):]), verified


def image3_seconds(units: list[WorkUnit]) -> float:
    """Expected Image3 CPU seconds over these inputs (the plan's cost model)."""
    try:
        from dream_hpc.plan import cost

        return cost.units_image3_cost(units).cpu_s
    except Exception:  # no aperture data: a rough figure only orders tasks and sets a time limit
        return MOSAIC_COST_FRACTION * sum(u.est_cpu_s or DEFAULT_UNIT_COST_S for u in units)


def mosaic_tails(units: list[WorkUnit]) -> dict[str, float]:
    """Filter -> expected cost of its Image3 over all its planned units."""
    by_filter: dict[str, list[WorkUnit]] = {}
    for u in units:
        by_filter.setdefault(u.filter, []).append(u)
    return {f: image3_seconds(us) for f, us in by_filter.items()}


def unit_time_limit(cfg: SurveyConfig, cost: float) -> float:
    eng = cfg.engine
    if eng.unit_timeout_s > 0:
        return eng.unit_timeout_s
    return max(eng.min_timeout_s, cost * eng.timeout_factor)
