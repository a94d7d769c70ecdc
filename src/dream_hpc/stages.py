"""The contract between the science chain and the engine: per-unit stages and what each returns.

The engine (serial, `mpiexec` or `srun`) only ever calls `run_stage(stage, unit, ctx)` for the
stages in STAGES, in order, for one unit, and `dream_hpc.mosaic.run_mosaic` once per filter. It
knows nothing of Mirage or jwst; the chain modules know nothing of ranks, Slurm or journals.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from dream_hpc.config import SurveyConfig
from dream_hpc.rundir import RunDir
from dream_hpc.workunit import WorkUnit

STAGES = ("simulate", "detector1", "image2")
# stage -> (module, function); the function has the signature of `run_stage`
_IMPLEMENTATIONS = {
    "simulate": ("dream_hpc.simulate", "simulate_unit"),
    "detector1": ("dream_hpc.calibrate", "detector1_unit"),
    "image2": ("dream_hpc.calibrate", "image2_unit"),
}
# The product each stage leaves in RUN/exposures (jwst suffixes)
PRODUCT_SUFFIX = {"simulate": "uncal", "detector1": "rate", "image2": "cal"}

# emit(kind, **data): report progress, e.g. emit("step", stage="detector1", step="jump", status="start").
Emit = Callable[..., None]


@dataclass
class StageContext:
    cfg: SurveyConfig
    run: RunDir
    emit: Emit = lambda kind, **data: None  # noqa: E731
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("dream_hpc.unit"))


@dataclass
class StageResult:
    stage: str
    inputs: dict[str, str] = field(default_factory=dict)  # path relative to RUN -> sha256
    outputs: dict[str, str] = field(default_factory=dict)  # path relative to RUN -> sha256
    refs: dict[str, str] = field(default_factory=dict)  # reftype -> reference file name (crds://...)
    ref_sha256: dict[str, str] = field(default_factory=dict)  # reference file name -> sha256
    params: dict[str, Any] = field(default_factory=dict)  # final parameters actually applied
    seeds: dict[str, int] = field(default_factory=dict)
    step_times: dict[str, float] = field(default_factory=dict)  # step name -> wall seconds
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific facts (e.g. n_sources)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def run_stage(stage: str, unit: WorkUnit, ctx: StageContext) -> StageResult:
    """Run one stage of one unit; raises on failure (the engine records where and why)."""
    if stage not in _IMPLEMENTATIONS:
        raise ValueError(f"unknown stage {stage!r} (one of {', '.join(STAGES)})")
    module, func = _IMPLEMENTATIONS[stage]
    return getattr(importlib.import_module(module), func)(unit, ctx)


def product_path(run: RunDir, unit: WorkUnit, stage: str):
    """Where `stage` writes its product for `unit`."""
    return run.exposures / unit.filename(PRODUCT_SUFFIX[stage])
