"""Checks before any compute: the config's inputs, the catalog on the footprint, every reference file.

Each check gives one clear line naming the thing and the fix, for every entry point (survey, run,
mosaic, reproduce, `cache refs`), before a single unit is simulated: a missing dark or catalog is one
message now, not the same failure in every unit later.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from dream_hpc.config import SurveyConfig, load_config
from dream_hpc.core.errors import UserError
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.references.lookup import default_reftypes, reference_names


# --- the references a survey needs (`dream-hpc cache refs`) ------------------------------------
def _survey_units(cfg: SurveyConfig) -> list[WorkUnit]:
    from dream_hpc.plan.pointings import make_plan

    units = make_plan(cfg)
    if not units:
        raise UserError(f"{cfg.source}: the plan has no exposures (check pointings and instrument)")
    return units


def _configured_for(cfg: SurveyConfig, crds_path: Path | None = None) -> Path:
    """Set the offline CRDS environment for `cfg` (before crds is imported); returns the cache path."""
    from dream_hpc.core import offline

    cache = crds_path or cfg.resolve(cfg.references.crds_path)
    if not (cache / "mappings").is_dir():
        raise UserError(f"{cache}: no CRDS cache here (references.crds_path); build the kit with `make kit` or "
                        f"sync the context's mappings with `crds sync --contexts {cfg.references.context}`")
    if "crds" in sys.modules and os.environ.get("CRDS_PATH") != str(cache.resolve()):
        raise UserError("CRDS was already loaded for another cache in this process (CRDS reads its "
                        "environment once); run this in a new process")
    offline.configure(crds_path=cache, context=cfg.references.context)
    return cache


def survey_references(cfg: SurveyConfig, crds_path: Path | None = None) -> tuple[dict[str, set[str]], int]:
    """Reference names the survey's planned exposures use, and the number of exposures."""
    from dream_hpc.stages.params import validate_step_overrides

    _configured_for(cfg, crds_path)
    validate_step_overrides(cfg)  # a typo in a `skip` override would change what gets prefetched
    units = _survey_units(cfg)
    return reference_names(units, default_reftypes(cfg)), len(units)


# --- before any compute ----------------------------------------------------------------------
def check_inputs(cfg: SurveyConfig) -> None:
    """The reference directories exist (one line naming the fix), and this process reads them as a
    run does: CRDS serverless and read-only, MIRAGE_DATA, one BLAS thread. Sockets stay open (MPI
    between nodes needs them); `prepare` closes them where nothing else runs."""
    from dream_hpc.core import offline

    refs = cfg.references
    for what, key in (("CRDS cache", "crds_path"), ("MIRAGE_DATA", "mirage_data")):
        path = cfg.resolve(getattr(refs, key))
        if not path.is_dir():
            raise UserError(f"references.{key}: {what} {path} does not exist (build the reference kit with "
                            "`make kit`, or point the config at one)")
    offline.configure(cfg.resolve(refs.crds_path), refs.context, cfg.resolve(refs.mirage_data))


def go_offline(cfg: SurveyConfig) -> None:
    """Make this process read references as a run does (`check_inputs`) and open no socket; must run
    before crds/jwst/mirage are imported."""
    from dream_hpc.core import offline

    check_inputs(cfg)
    offline.forbid_network()


def load_offline(config_path: str | Path, validate_overrides: bool = True) -> SurveyConfig:
    """Load the config and `go_offline`. `validate_overrides` checks the step overrides against jwst
    (importing it: seconds)."""
    cfg = load_config(config_path)
    go_offline(cfg)
    if validate_overrides:
        from dream_hpc.stages.params import validate_step_overrides

        validate_step_overrides(cfg)
    return cfg


def plan_and_check(cfg: SurveyConfig, pipelines: bool = True,
                   prepared_path: Any = None) -> tuple[list[WorkUnit], Any]:
    """The work units and the catalog check (counts on the footprint); refuses an empty footprint.

    `pipelines=False` leaves out the references of the jwst pipelines, which need jwst imported to
    list (seconds): the engine's workers check those at start-up, where jwst is imported anyway.
    `prepared_path`: where the prepared catalog goes (a run's RUN/catalog/prepared.h5)."""
    from dream_hpc.catalog.survey_check import check_catalog
    from dream_hpc.plan.pointings import make_plan

    units = make_plan(cfg)
    if not units:
        raise UserError("the plan has no work units (check pointings and instrument)")
    # prepares the catalog (reused while unchanged) into `prepared_path` or the user cache; one-line
    # CatalogError if missing, unreadable or off-footprint
    check = check_catalog(cfg, units, prepared_path)
    check_references(cfg, units, pipelines)
    return units, check


def check_references(cfg: SurveyConfig, units: list[WorkUnit], pipelines: bool = True) -> None:
    """Every reference and kit file the units need exists, checked once per kind of exposure:
    a missing dark or flat is one line now, not the same failure in every unit later.
    `pipelines=False`: Mirage's references only (no jwst import)."""
    from dream_hpc import refkit
    from dream_hpc.references import lookup
    from dream_hpc.stages import simulate

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
            lookup.best_references(unit)  # everything the three pipelines will look up
