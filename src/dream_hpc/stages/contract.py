"""The contract between the science chain and the engine: what a stage gets and what it returns.

A *stage set* is a module with four functions; stages/chain.py is the real one (Mirage + jwst):

- ``preload()``: import what the stages need, once per worker process;
- ``check_before_compute(cfg, run)``: once per worker, before any unit (step overrides, references);
- ``run_stage(stage, unit, ctx) -> StageResult`` for the stages in STAGES, in order, for one unit;
- ``run_mosaic(filter, units, ctx) -> StageResult``, once per filter (Image3).

The engine's worker (engine/worker.py) only ever calls these; it knows nothing of Mirage or jwst, and
the stages know nothing of ranks, Slurm or journals. The engine's fast tests hand the worker a
stand-in stage set (tests/stand_in_stages.py) to exercise failure, timeout and kill paths in seconds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from dream_hpc.config import SurveyConfig
from dream_hpc.core.records import StageResult
from dream_hpc.core.rundir import RunDir
from dream_hpc.core.workunit import PRODUCT_SUFFIX, WorkUnit

__all__ = ["Emit", "StageContext", "StageResult", "product_path"]

# emit(kind, **data): report progress, e.g. emit("step", stage="detector1", step="jump", status="start").
Emit = Callable[..., None]


@dataclass
class StageContext:
    cfg: SurveyConfig
    run: RunDir
    emit: Emit = lambda kind, **data: None  # noqa: E731
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("dream_hpc.unit"))


def product_path(run: RunDir, unit: WorkUnit, stage: str):
    """Where `stage` writes its product for `unit`."""
    return run.exposures / unit.filename(PRODUCT_SUFFIX[stage])
