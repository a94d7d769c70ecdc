"""Checks before any compute: the config's inputs, the catalog on the footprint, every reference file.

Each check gives one clear line naming the thing and the fix, for every entry point (survey, run,
mosaic, reproduce, `cache refs`), before a single unit is simulated: a missing dark or catalog is one
message now, not the same failure in every unit later.
"""

from __future__ import annotations

import contextlib
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
        from dream_hpc.refkit.for_config import build_command

        raise UserError(f"{cache}: no CRDS cache here (references.crds_path); build the kit this config needs with "
                        f"`{build_command(cfg)}` or sync the context's mappings with "
                        f"`crds sync --contexts {cfg.references.context}`")
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
    from dream_hpc.refkit.for_config import build_command

    refs = cfg.references
    for what, key in (("CRDS cache", "crds_path"), ("MIRAGE_DATA", "mirage_data")):
        path = cfg.resolve(getattr(refs, key))
        if not path.is_dir():
            raise UserError(f"references.{key}: {what} {path} does not exist (build the kit this config needs "
                            f"with `{build_command(cfg)}`, or point the config at one)")
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
    for _ in _unit_kinds(cfg, units, pipelines):
        pass


def _unit_kinds(cfg: SurveyConfig, units: list[WorkUnit], pipelines: bool | list[str]):
    """(kind, units of that kind, {file: role}) per kind of exposure; raises UserError for a file
    that is missing. `pipelines`: True (every type jwst looks up: imports jwst), False (Mirage's
    references only) or the list of reference types to look up."""
    from dream_hpc import refkit
    from dream_hpc.references import lookup
    from dream_hpc.stages import simulate
    from dream_hpc.stages.mirage_inputs import SimulationError

    kinds: dict[tuple, list[WorkUnit]] = {}
    for unit in units:
        kind = (unit.detector, unit.filter, unit.pupil, unit.subarray, unit.readpatt, unit.ngroups, unit.nints,
                unit.date_obs)
        kinds.setdefault(kind, []).append(unit)
    mirage_data = cfg.resolve(cfg.references.mirage_data)
    for kind, members in kinds.items():
        unit = members[0]
        files: dict[Path, str] = {}
        try:
            for path in refkit.mirage_files(mirage_data, unit.detector, unit.filter, unit.readpatt, unit.ngroups):
                files[Path(path)] = "MIRAGE_DATA"
            for key, path in simulate.mirage_references(unit).items():
                files.setdefault(Path(path), f"Mirage {key}")
            if pipelines:
                types = None if pipelines is True else pipelines
                for reftype, path in lookup.best_references(unit, types).items():  # what the pipelines look up
                    files.setdefault(Path(path), reftype)
        except (refkit.KitError, SimulationError) as e:
            raise UserError(_kit_fix(cfg, str(e))) from None
        except UserError as e:
            if "no " in str(e) and "reference for" in str(e):  # the context has no file for this exposure
                raise UserError(_kit_fix(cfg, str(e))) from None
            raise
        yield kind, members, files


def _kit_fix(cfg: SurveyConfig, message: str) -> str:
    """A kit error with the one fix that works for this config (the kit built for it)."""
    from dream_hpc.refkit.for_config import build_command

    what = message.split("; rebuild", 1)[0].split("; fix:", 1)[0].split(" (Mirage needs it as", 1)[0]
    return (f"{what}; fix: build the kit this config needs with `{build_command(cfg)}` "
            "(or point references.crds_path / references.mirage_data at one that has it)")


# --- references verified against their checksum record, before any compute -----------------------
def planned_reftypes(cfg: SurveyConfig) -> list[str]:
    """Every reference type the survey's pipelines look up (lookup.default_reftypes), without
    importing jwst on rank 0 more than once per machine: the list depends only on the jwst version
    and the `skip` overrides, and is kept beside the machine-wide digest cache."""
    import json
    from importlib.metadata import version

    from dream_hpc.core.digests import cache_dir
    from dream_hpc.core.rundir import atomic_write_text
    from dream_hpc.references.lookup import default_reftypes

    skips = sorted(f"{pipe}.{step}={bool(params['skip'])}" for pipe in ("detector1", "image2", "image3")
                   for step, params in getattr(cfg.pipeline, pipe).items()
                   if isinstance(params, dict) and "skip" in params)
    key = f"jwst {version('jwst')}|" + ",".join(skips)
    path = cache_dir() / "reftypes.json"
    try:
        known = json.loads(path.read_text())
    except (OSError, ValueError):
        known = {}
    if isinstance(known, dict) and isinstance(known.get(key), list):
        return [str(t) for t in known[key]]
    types = default_reftypes(cfg)
    known = known if isinstance(known, dict) else {}
    known[key] = types
    with contextlib.suppress(OSError):  # an unwritable cache only costs the jwst import next time
        atomic_write_text(path, json.dumps(known, indent=0, sort_keys=True))
    return types


def held_back_units(cfg: SurveyConfig, units: list[WorkUnit], reftypes: list[str] | None = None,
                    say: Any = None) -> dict[str, str]:
    """Unit id -> one line naming the bad reference(s) it needs and the fix, for every unit whose
    references (CRDS and MIRAGE_DATA, everything Mirage and the three pipelines read) do not match
    their checksum record. Each file is checked once; `say` gets one line per bad file."""
    from dream_hpc.references.checksums import check_file, fix_for

    types: list[str] | bool = reftypes if reftypes is not None else planned_reftypes(cfg)
    verdicts: dict[Path, Any] = {}
    users: dict[Path, list[str]] = {}
    held: dict[str, str] = {}
    config = cfg.source or "CONFIG"
    for _kind, members, files in _unit_kinds(cfg, units, types):
        bad = []
        for path, role in files.items():
            if path not in verdicts:
                verdicts[path] = check_file(path)
            if not verdicts[path].ok:
                bad.append((path, role))
                users.setdefault(path, []).extend(u.unit_id for u in members)
        if bad:
            line = "; ".join(f"reference {p.name} ({role}) is {verdicts[p].problem}; fix: "
                             f"{fix_for(verdicts[p], config, cfg.references.context)}" for p, role in bad)
            for u in members:
                held[u.unit_id] = line
    if say is not None:
        for path, ids in users.items():
            v = verdicts[path]
            shown = ", ".join(ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
            say(f"reference check: {path}: {v.problem}; fix: {fix_for(v, config, cfg.references.context)}; "
                f"holding back the {len(ids)} unit(s) that need it ({shown}); the others run")
    return held


def describe_step_references(cfg: SurveyConfig, unit: WorkUnit, stage: str, step: str | None) -> str:
    """`references of STAGE/STEP: NAME (verifies), ...` for a failed jwst step (empty if unknown)."""
    from dream_hpc.references import lookup
    from dream_hpc.references.checksums import check_file

    if stage not in lookup.PIPELINE_CLASSES or not step:
        return ""
    cls = lookup.pipeline_class(stage)
    step_cls = cls.step_defs.get(step)
    if step_cls is None:
        return ""
    types = sorted(set(step_cls.reference_file_types))
    if not types:
        return f"references of {step}: none"
    try:
        found = lookup.best_references(unit, types)
    except Exception as e:  # the description must never hide the step's own error
        return f"references of {step}: not looked up ({e})"
    shown = ", ".join(check_file(p).short() for _t, p in sorted(found.items()))
    return f"references of {step}: {shown or 'none (N/A)'}"
