"""CRDS references of a survey: best references per work unit, `dream-hpc cache refs` and `cache verify`.

Every function here runs after `dream_hpc.offline.configure(...)` pointed CRDS at the pinned
context in serverless local mode: CRDS reads its environment once per process, so nothing here
may import crds before that. References are looked up the way jwst looks them up (the same
parameters, the exposure's own observation date), but without CRDS's download fallback: a file
missing from the cache is named with its fix instead of failing as `CrdsNetworkError`.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from dream_hpc.cli import UserError
from dream_hpc.config import READ_PATTERNS, SurveyConfig
from dream_hpc.workunit import WorkUnit

PIPELINE_CLASSES = {"detector1": "Detector1Pipeline", "image2": "Image2Pipeline", "image3": "Image3Pipeline"}
FORMATS = ("names", "paths", "crds-sync")


# --- the CRDS view of one exposure --------------------------------------------------------------
def dms_detector(detector: str) -> str:
    """The DETECTOR keyword jwst and CRDS use: NRCA5/NRCB5 are written NRCALONG/NRCBLONG."""
    d = detector.upper()
    return d[:4] + "LONG" if d in ("NRCA5", "NRCB5") else d


def header_for_unit(unit: WorkUnit) -> dict[str, object]:
    """The CRDS matching parameters of a unit's exposure, as `DataModel.get_crds_parameters()` gives them.

    Covers every parameter key the JWST NIRCam rules match on (detector, filter, pupil, channel,
    module, exposure type, read pattern, outputs, subarray, visit flags, observation date/time).
    """
    detector = dms_detector(unit.detector)
    nframes, groupgap = READ_PATTERNS.get(unit.readpatt, (1, 0))
    return {
        "meta.telescope": "JWST",
        "meta.instrument.name": "NIRCAM",
        "meta.instrument.detector": detector,
        "meta.instrument.filter": unit.filter.upper(),
        "meta.instrument.pupil": unit.pupil.upper(),
        "meta.instrument.channel": unit.channel,
        "meta.instrument.module": detector[3],  # NRCB1 / NRCBLONG -> B
        "meta.exposure.type": "NRC_IMAGE",
        "meta.exposure.readpatt": unit.readpatt,
        "meta.exposure.ngroups": unit.ngroups,
        "meta.exposure.nints": unit.nints,
        "meta.exposure.nframes": nframes,
        "meta.exposure.groupgap": groupgap,
        "meta.exposure.noutputs": 4 if unit.subarray == "FULL" else 1,  # NIRCam subarrays read one output
        "meta.subarray.name": unit.subarray,
        "meta.observation.date": unit.date_obs,
        "meta.observation.time": unit.time_obs,
        "meta.visit.type": "PRIME_TARGETED_FIXED",
        "meta.visit.tsovisit": False,
        "meta.visit.crowded_field": False,
    }


@functools.cache
def _pipeline_class(pipeline: str) -> type:
    import jwst.pipeline

    return getattr(jwst.pipeline, PIPELINE_CLASSES[pipeline])


def pipeline_reftypes(cfg: SurveyConfig | None = None) -> dict[str, list[str]]:
    """Pipeline -> reference types its steps prefetch (steps that run, with the survey's `skip` overrides)."""
    out = {}
    for name in PIPELINE_CLASSES:
        skips = {}
        if cfg is not None:
            skips = {step: {"skip": bool(params["skip"])}
                     for step, params in getattr(cfg.pipeline, name).items() if "skip" in params}
        pipe = _pipeline_class(name)(steps=skips)
        out[name] = sorted(set(pipe.reference_file_types))
    return out


def all_step_reftypes() -> dict[str, list[str]]:
    """Pipeline -> reference types of all of its steps, skipped ones included (what a context must cover)."""
    out = {}
    for name in PIPELINE_CLASSES:
        cls = _pipeline_class(name)
        out[name] = sorted({t for step in cls.step_defs.values() for t in step.reference_file_types})
    return out


def parameter_reftypes() -> dict[str, list[str]]:
    """Pipeline -> `pars-*` types stpipe asks CRDS for (the pipeline's and every step's parameters)."""
    out = {}
    for name in PIPELINE_CLASSES:
        cls = _pipeline_class(name)
        out[name] = sorted({cls.get_config_reftype()} | {s.get_config_reftype() for s in cls.step_defs.values()})
    return out


def default_reftypes(cfg: SurveyConfig | None = None) -> list[str]:
    """Every reference type a survey's three pipelines look up: prefetched types plus `pars-*`."""
    if cfg is None:
        return list(_jwst_default_reftypes())
    types: set[str] = set()
    for group in (pipeline_reftypes(cfg), parameter_reftypes()):
        for names in group.values():
            types.update(names)
    return sorted(types)


@functools.cache
def _jwst_default_reftypes() -> tuple[str, ...]:
    return tuple(default_reftypes(SurveyConfig()))


def context_name() -> str:
    return os.environ.get("CRDS_CONTEXT", "") or "the CRDS context"


@functools.lru_cache(maxsize=4096)
def _recommend(header_items: tuple, reftypes: tuple[str, ...]) -> dict[str, str]:
    import crds

    try:
        return crds.getrecommendations(dict(header_items), reftypes=list(reftypes), observatory="jwst")
    except Exception as e:  # a mapping missing or damaged: CRDS would try the (absent) server
        ctx = context_name()
        raise UserError(f"CRDS cannot load {ctx} from {os.environ.get('CRDS_PATH', '?')} "
                        f"({type(e).__name__}: {str(e).splitlines()[0][:160]}); run `dream-hpc cache verify` "
                        f"on it, then re-sync mappings with `crds sync --contexts {ctx}` or rebuild the kit") from None


def recommendations(unit: WorkUnit, reftypes: Iterable[str] | None = None) -> dict[str, str | None]:
    """Reftype -> best reference file name for the unit (None where the context says N/A).

    Raises UserError naming the reftype when the context has no rule for a prefetched type or no
    match for this exposure (a `pars-*` type without a rule just means jwst's defaults).
    """
    types = tuple(sorted(set(reftypes) if reftypes is not None else default_reftypes()))
    header = header_for_unit(unit)
    found = _recommend(tuple(sorted(header.items())), types)
    out: dict[str, str | None] = {}
    for reftype in types:
        value = str(found.get(reftype, "NOT FOUND no answer"))
        if not value.upper().startswith("NOT FOUND"):
            out[reftype] = value
            continue
        reason = value[len("NOT FOUND"):].strip()
        if reason.lower() == "n/a" or (reftype.startswith("pars-") and "unknown reference type" in reason.lower()):
            out[reftype] = None
            continue
        raise UserError(f"no {reftype} reference for {unit.unit_id} ({unit.detector} {unit.filter} "
                        f"{unit.subarray} {unit.readpatt}, {unit.date_obs}) in {context_name()}: {reason}; "
                        f"fix: build the kit for it (`dream-hpc refkit build --detectors {unit.detector} --filters "
                        f"{unit.filter} --readpatt {unit.readpatt} ...`) or pin a context that covers it "
                        "(references.context)")
    return out


def reference_path(name: str) -> Path:
    """Where the CRDS cache keeps (or would keep) reference `name`."""
    from crds.core import config as crds_config

    return Path(crds_config.locate_file(name, "jwst"))


def best_references(unit: WorkUnit, reftypes: Iterable[str] | None = None) -> dict[str, Path]:
    """Reftype -> path of the best reference in the cache (N/A types omitted).

    A reference the context selects but the cache lacks raises UserError naming it and the fix
    (CRDS itself would try to download it and fail with `CrdsNetworkError ... server-less mode`).
    """
    paths: dict[str, Path] = {}
    for reftype, name in recommendations(unit, reftypes).items():
        if name is None:
            continue
        path = reference_path(name)
        if not path.is_file():
            raise UserError(f"{reftype} reference {name} for {unit.unit_id} is not in the CRDS cache ({path}); "
                            f"fix: `crds sync --contexts {context_name()} --files {name}` on a connected node "
                            "(see `dream-hpc cache refs CONFIG --format crds-sync`), or rebuild the kit")
        paths[reftype] = path
    return paths


def reference_names(units: Iterable[WorkUnit], reftypes: Iterable[str] | None = None) -> dict[str, set[str]]:
    """Reference file name -> reftypes it serves, over all `units` (what a cache must hold for them)."""
    types = list(reftypes) if reftypes is not None else default_reftypes()
    names: dict[str, set[str]] = {}
    for unit in units:
        for reftype, name in recommendations(unit, types).items():
            if name is not None:
                names.setdefault(name, set()).add(reftype)
    return names


# --- commands ---------------------------------------------------------------------------------------
def _survey_units(cfg: SurveyConfig) -> list[WorkUnit]:
    try:
        from dream_hpc.plan import make_plan
    except ImportError as e:
        raise UserError(f"survey planning is not available ({e}); cannot list the survey's exposures") from None
    units = make_plan(cfg)
    if not units:
        raise UserError(f"{cfg.source}: the plan has no exposures (check pointings and instrument)")
    return units


def _configured_for(cfg: SurveyConfig, crds_path: Path | None = None) -> Path:
    """Set the offline CRDS environment for `cfg` (before crds is imported); returns the cache path."""
    from dream_hpc import offline

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
    from dream_hpc.params import validate_step_overrides

    _configured_for(cfg, crds_path)
    validate_step_overrides(cfg)  # a typo in a `skip` override would change what gets prefetched
    units = _survey_units(cfg)
    return reference_names(units, default_reftypes(cfg)), len(units)


def _cmd_refs(args: argparse.Namespace) -> int:
    from dream_hpc.config import load_config

    cfg = load_config(args.config)
    names, n_units = survey_references(cfg)
    ctx = cfg.references.context
    ordered = sorted(names)
    if args.format == "names":
        print("\n".join(ordered))
    elif args.format == "paths":
        print("\n".join(str(reference_path(n)) for n in ordered))
    else:
        print(f"# {len(ordered)} reference files for {n_units} exposures of {cfg.survey.name}, context {ctx}")
        print("# on a login node with network: export CRDS_PATH=<shared cache> "
              "CRDS_SERVER_URL=https://jwst-crds.stsci.edu")
        print(f"crds sync --contexts {ctx} --files " + " \\\n    ".join(ordered))
    print(f"dream-hpc cache refs: {len(ordered)} reference files for {n_units} exposures, context {ctx}",
          file=sys.stderr)
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    from dream_hpc import integrity

    try:
        layout = integrity.locate(args.dir)
    except ValueError as e:
        raise UserError(str(e)) from None
    needed = None
    notes = []
    if args.config:
        from dream_hpc.config import load_config

        cfg = load_config(args.config)
        args.context = args.context or cfg.references.context
        try:
            needed = set(survey_references(cfg, layout.cache)[0])
        except UserError as e:  # mapping damage is reported below, with the rest
            notes.append(f"note: could not list the survey's references ({e}); checked every named file instead")
    else:
        integrity.prepare_crds_env(args.dir)
    rep = integrity.verify(args.dir, context=args.context, needed=needed,
                           progress_stream=None if args.quiet else sys.stderr)
    for problem in rep.problems:
        print(problem.line())
    for note in notes + [f"note: {n}" for n in rep.notes[:10]]:
        print(note)
    if len(rep.notes) > 10:
        print(f"note: ... and {len(rep.notes) - 10} more notes")
    print(rep.summary())
    return 0 if rep.ok else 1


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("cache", help="check a CRDS cache or reference kit; list the references a survey uses")
    csub = p.add_subparsers(dest="cache_command", metavar="SUBCOMMAND", required=True)
    v = csub.add_parser("verify", help="check mappings, named files and every reference (exit 1 on any problem)",
                        description="Check a CRDS cache (CRDS_PATH) or a reference kit (crds_cache/ + "
                        "manifest.json): mapping checksums, that every file a mapping names exists, and each "
                        "reference against the kit manifest's sha256, else CRDS's sha1 catalog, else its "
                        "content (FITS structure and checksums, ASDF blocks). One line per problem with its fix.")
    v.add_argument("dir", help="CRDS cache root, or a kit root containing crds_cache/ and manifest.json")
    v.add_argument("--context", help="check only files named by this context (default: every .pmap present)")
    v.add_argument("--config", help="survey config: require only the references its exposures use "
                   "(for a cache synced with `cache refs`)")
    v.add_argument("--quiet", action="store_true", help="no progress display")
    v.set_defaults(func=_cmd_verify)
    r = csub.add_parser("refs", help="list exactly the reference files the survey's exposures will use",
                        description="Best references of every planned exposure (its own observation date, the "
                        "pinned context), for every type Detector1, Image2 and Image3 prefetch plus pars-* "
                        "parameter references, so a cluster syncs only those.")
    r.add_argument("config", help="survey config (YAML)")
    r.add_argument("--format", choices=FORMATS, default="names",
                   help="names (one per line), paths (in the cache), or crds-sync (a ready `crds sync` command)")
    r.set_defaults(func=_cmd_refs)
