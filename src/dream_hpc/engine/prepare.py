"""Preparing a run on rank 0, under the run lock: the config against the record, the plan, earlier attempts.

Everything a rerun needs to resume comes from the journal's read model (core/runstate.py): a unit whose
recorded products verify by checksum is not computed again.
"""

from __future__ import annotations

import logging
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dream_hpc.config import SurveyConfig, parse_config
from dream_hpc.core.errors import UserError
from dream_hpc.core.rundir import RunDir, atomic_write_text
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.engine.scheduler import MosaicFactory
from dream_hpc.engine.tasks import DEFAULT_UNIT_COST_S, Task, image3_seconds, mosaic_tails, unit_time_limit

# A file RUN/STOP asks a running `dream-hpc run` to start nothing new and exit when running units end.
STOP_FILE = "STOP"


def _flatten(d: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(d, dict):
        out: dict[str, Any] = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: d}


def check_same_config(run: RunDir, cfg: SurveyConfig, anything_done: bool = True) -> None:
    """A resumed run must use the config it started with (else its units would mix two surveys).

    Until some stage has finished there is nothing to mix, so a corrected config simply replaces it.
    """
    if not run.config.is_file() or not anything_done:
        atomic_write_text(run.config, cfg.text)
        return
    recorded = parse_config(run.config.read_text(), run.config)
    a, b = _flatten(recorded.to_dict()), _flatten(cfg.to_dict())
    diffs = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k))
    if diffs:
        shown = "; ".join(f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in diffs[:4])
        more = f" and {len(diffs) - 4} more" if len(diffs) > 4 else ""
        raise UserError(f"{cfg.source}: differs from the config this run started with ({run.config}): "
                        f"{shown}{more}; resume with the same config, or use a new --out")


def plan_units(cfg: SurveyConfig, prepared_catalog: Path | None = None) -> list[WorkUnit]:
    """The work units, with the catalog checked against their footprint and Mirage's references found.

    The check prepares the survey's catalog once (catalog/prepared.py) into `prepared_catalog`: the
    units then read only the rows near their detector from it."""
    from dream_hpc.stages.preflight import check_inputs, plan_and_check

    check_inputs(cfg)
    # Step overrides and the pipelines' references are checked by each worker at start-up
    # (stages/chain.check_before_compute), where jwst is imported anyway: importing it here would delay every rank's first
    # unit by seconds.
    units, _ = plan_and_check(cfg, pipelines=False, prepared_path=prepared_catalog)
    return units


def write_footprint(cfg: SurveyConfig, run: RunDir, units: list[WorkUnit]) -> None:
    """figures/footprint.png (as `dream-hpc plan --out` writes it); a figure never stops a run."""
    try:
        from dream_hpc.catalog import prepared
        from dream_hpc.plan.figure import footprint_png
        from dream_hpc.plan.grid import filter_tiles

        ra, dec, weight = prepared.for_run(cfg, run.root, units).sample_positions()  # not every row
        tiles = filter_tiles(cfg, units) if cfg.mosaic.mode == "tiles" else None
        footprint_png(cfg, units, run.figures / "footprint.png", (ra, dec), tiles=tiles, catalog_weight=weight)
    except Exception as e:
        logging.getLogger("dream_hpc").warning("footprint.png not written: %s: %s", type(e).__name__, e)


def record_plan(run: RunDir, cfg: SurveyConfig, units: list[WorkUnit]) -> None:
    """Write plan.json, or check that the recorded plan has the same units (else a clear error)."""
    from dream_hpc.core.runstate import read_plan

    ids = [u.unit_id for u in units]
    if len(set(ids)) != len(ids):
        raise UserError("the plan has duplicate unit ids (two exposures with the same jwst name): check "
                        "pointings and dithers in the config")
    recorded = read_plan(run)
    if recorded:
        added, removed = set(ids) - set(recorded), set(recorded) - set(ids)
        if added or removed:
            raise UserError(f"{run.plan}: the recorded plan differs from this config's plan ({len(added)} units "
                            f"added, {len(removed)} removed): the planning code or its inputs changed; use a new --out")
        return
    from dream_hpc.plan.summary import summarize, write_plan

    write_plan(run.plan, units, summarize(cfg, units))


@dataclass
class Prepared:
    cfg: SurveyConfig
    run: RunDir
    units: list[WorkUnit]
    tasks: list[Task]
    view: Any
    held: dict[str, str] = field(default_factory=dict)  # unit id -> why it cannot run (a bad reference)


def prepare(cfg: SurveyConfig, out: Path, mosaic: bool = True, compute_units: bool = True,
            filters: set[str] | None = None) -> Prepared:
    """Rank 0, under the run lock: check the config against the record, plan, read earlier attempts.

    `filters` keeps only those filters' units (and mosaics); `compute_units=False` only verifies
    units an earlier run finished (what `dream-hpc mosaic` needs before Image3)."""
    from dream_hpc.core.runstate import read_run

    run = RunDir.create(out)
    before = read_run(run)
    anything_done = (any(u.stages or u.done for u in before.units.values())
                     or any(m.data for m in before.mosaics.values()))
    check_same_config(run, cfg, anything_done)
    if not anything_done:
        run.plan.unlink(missing_ok=True)  # planned from a config that never produced anything
    from dream_hpc.catalog.prepared import RUN_FILE

    units = plan_units(cfg, run.root / RUN_FILE)  # prepares the catalog once, before any unit (resumable)
    if not units:
        raise UserError(f"{cfg.source}: the plan has no units (check pointings, detectors and filter_pairs)")
    record_plan(run, cfg, units)
    if not (run.figures / "footprint.png").is_file():
        write_footprint(cfg, run, units)
    if filters:
        planned_filters = sorted({u.filter.upper() for u in units})
        units = [u for u in units if u.filter.upper() in filters]
        if not units:
            raise UserError(f"{cfg.source}: no units in {', '.join(sorted(filters))} (this config's filters: "
                            f"{', '.join(planned_filters)})")
    held = hold_back(cfg, units, before) if compute_units else {}
    tails = mosaic_tails(units) if mosaic else {}
    # Leftovers of writes cut short by a kill never count; we hold the lock, so nobody is writing them.
    # (anywhere in the run: products, Mirage's inputs, figures, provenance.h5 and summary.json)
    for stale in sorted(run.root.rglob(".tmp-*"), key=lambda p: len(p.parts)):
        if stale.is_dir() and not stale.is_symlink():
            shutil.rmtree(stale, ignore_errors=True)  # a stage's scratch directory (Mirage, Image3)
        else:
            stale.unlink(missing_ok=True)
    view = read_run(run)
    tasks = []
    for u in units:
        cost = u.est_cpu_s if u.est_cpu_s > 0 else DEFAULT_UNIT_COST_S
        state = view.units.get(u.unit_id)
        recorded = {"done": state.done, "stages": state.stages} if state else {}
        tasks.append(Task(u.unit_id, "unit", cost, unit_time_limit(cfg, cost), unit=u, recorded=recorded,
                          tail=tails.get(u.filter, 0.0), verify_only=not compute_units))
    return Prepared(cfg, run, units, tasks, view, held)


def hold_back(cfg: SurveyConfig, units: list[WorkUnit], before: Any) -> dict[str, str]:
    """Units not yet done whose references fail their checksum record (stages/preflight.py), each
    bad file named in one line on stderr before any compute; the other units run."""
    from dream_hpc.stages.preflight import held_back_units

    pending = [u for u in units if not (before.units.get(u.unit_id) and before.units[u.unit_id].done)]
    if not pending:
        return {}
    return held_back_units(cfg, pending, say=lambda line: print(line, file=sys.stderr, flush=True))


def mosaic_factory(cfg: SurveyConfig, view: Any, run: RunDir | None = None) -> Any:
    """What the scheduler asks for a filter's mosaic once its units ended: the tiled task graph
    (mosaic.mode tiles, on the grid of every planned unit), or one Image3 task (single)."""
    if cfg.mosaic.mode == "tiles" and run is not None:
        from dream_hpc.engine.mosaic_graph import TiledMosaics
        from dream_hpc.plan.summary import load_plan

        return TiledMosaics(cfg, view, load_plan(run.plan))
    return single_mosaic_factory(cfg, view)


def single_mosaic_factory(cfg: SurveyConfig, view: Any) -> MosaicFactory:
    def make(filt: str, ok: list[Task], outcomes: dict[str, Any]) -> Task:
        expected = {p: h for t in ok for p, h in outcomes[t.key].outputs.items() if p.endswith("_cal.fits")}
        cost = image3_seconds([t.unit for t in ok])
        limit = max(cfg.engine.min_timeout_s, cost * cfg.engine.timeout_factor)
        state = view.mosaics.get(filt)
        recorded = {"done": state.data} if state and state.data else {}
        return Task(f"mosaic_{filt}", "mosaic", cost, limit, filter=filt, units=[t.unit for t in ok],
                    recorded=recorded, expected_inputs=expected)

    return make
