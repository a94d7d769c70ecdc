"""`dream-hpc survey CONFIG --out RUN`: a whole survey on one machine, and the checks before any compute.

`survey` is `dream-hpc run` (engine.py: every unit, then one Image3 per filter, with time limits,
failure isolation and checksum-verified resume) followed by what `dream-hpc mosaic` adds (report.py:
the science check per mosaic, summary.json, provenance.h5). The checks here (config, catalog on the
footprint, every reference file) give one clear line before any compute, for every entry point.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path
from typing import Any

from dream_hpc.cli import UserError
from dream_hpc.config import SurveyConfig, load_config
from dream_hpc.rundir import RunDir
from dream_hpc.workunit import WorkUnit


# --- before any compute ----------------------------------------------------------------------
def check_inputs(cfg: SurveyConfig) -> None:
    """The reference directories exist (one line naming the fix), and this process reads them as a
    run does: CRDS serverless and read-only, MIRAGE_DATA, one BLAS thread. Sockets stay open (MPI
    between nodes needs them); `prepare` closes them where nothing else runs."""
    from dream_hpc import offline

    refs = cfg.references
    for what, key in (("CRDS cache", "crds_path"), ("MIRAGE_DATA", "mirage_data")):
        path = cfg.resolve(getattr(refs, key))
        if not path.is_dir():
            raise UserError(f"references.{key}: {what} {path} does not exist (build the reference kit with "
                            "`make kit`, or point the config at one)")
    offline.configure(cfg.resolve(refs.crds_path), refs.context, cfg.resolve(refs.mirage_data))


def prepare(config_path: str | Path, validate_overrides: bool = True) -> SurveyConfig:
    """Load the config and make this process offline (`check_inputs`, then no sockets); must run
    before crds/jwst/mirage are imported. `validate_overrides` checks the step overrides against
    jwst (importing it: seconds), which code that runs no pipeline (the report) skips."""
    from dream_hpc import offline

    cfg = load_config(config_path)
    check_inputs(cfg)
    offline.forbid_network()
    if validate_overrides:
        from dream_hpc.params import validate_step_overrides

        validate_step_overrides(cfg)
    return cfg


def plan_and_check(cfg: SurveyConfig, pipelines: bool = True) -> tuple[list[WorkUnit], Any]:
    """The work units and the catalog check (counts on the footprint); refuses an empty footprint.

    `pipelines=False` leaves out the references of the jwst pipelines, which need jwst imported to
    list (seconds): the engine's workers check those at start-up, where jwst is imported anyway."""
    from dream_hpc import catalog
    from dream_hpc.plan import make_plan

    units = make_plan(cfg)
    if not units:
        raise UserError("the plan has no work units (check pointings and instrument)")
    check = catalog.check_catalog(cfg, units)  # one-line CatalogError if missing, unreadable or off-footprint
    check_references(cfg, units, pipelines)
    return units, check


def check_references(cfg: SurveyConfig, units: list[WorkUnit], pipelines: bool = True) -> None:
    """Every reference and kit file the units need exists, checked once per kind of exposure:
    a missing dark or flat is one line now, not the same failure in every unit later.
    `pipelines=False`: Mirage's references only (no jwst import)."""
    from dream_hpc import cache, refkit, simulate

    seen: set[tuple] = set()
    for unit in units:
        kind = (unit.detector, unit.filter, unit.pupil, unit.subarray, unit.readpatt, unit.ngroups, unit.nints,
                unit.date_obs)
        if kind in seen:
            continue
        seen.add(kind)
        refkit.mirage_paths(cfg.resolve(cfg.references.mirage_data), unit.detector, unit.filter, unit.readpatt,
                            unit.ngroups)
        simulate.mirage_references(unit)
        if pipelines:
            cache.best_references(unit)  # everything the three pipelines will look up


# --- the survey ------------------------------------------------------------------------------
def run_survey(config_path: str | Path, out: str | Path, quiet: bool = False) -> tuple[int, dict[str, Any] | None]:
    """`dream-hpc run` in this process (no launcher) + the report; (exit code, summary or None if stopped)."""
    from dream_hpc import engine, report

    t0 = time.monotonic()
    stream = open(os.devnull, "w") if quiet else sys.stdout  # noqa: SIM115 (closed below)
    try:
        code = engine.execute(config_path, out, mosaic=True, stream=stream)
    finally:
        if quiet:
            stream.close()
    if code == engine.EXIT_STOPPED:
        return code, None
    cfg = prepare(config_path, validate_overrides=False)
    run = RunDir(Path(out).resolve())
    with run.lock("survey report"):
        summary = report.finish(cfg, run, time.monotonic() - t0)
    if not quiet:
        print(report.format_summary(summary))
    return (code if code else 0 if report.ok(summary) else 1), summary


# --- CLI -------------------------------------------------------------------------------------
def _cmd_survey(args: argparse.Namespace) -> int:
    code, _ = run_survey(args.config, args.out, quiet=args.quiet)
    return code


def add_commands(sub: Any) -> None:
    p = sub.add_parser("survey", help="run a whole survey on this machine (simulate -> Image3 -> science check)",
                       description="Run every stage of a survey in one process tree on this machine: `dream-hpc "
                                   "run` (simulate, Detector1 and Image2 per exposure, Image3 per filter) followed "
                                   "by the science check, summary.json and provenance.h5. Rerun to resume.")
    p.add_argument("config", help="survey config (YAML), e.g. config/demo.yaml")
    p.add_argument("--out", required=True, help="run directory (created; rerun with the same config to resume)")
    p.add_argument("--quiet", action="store_true", help="no progress display or printed summary")
    p.set_defaults(func=_cmd_survey)
