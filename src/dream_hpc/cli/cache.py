"""`dream-hpc cache refs|verify`: the CRDS references a survey needs, and checking a cache or kit."""

from __future__ import annotations

import argparse
import sys

from dream_hpc.core.errors import UserError
from dream_hpc.references.lookup import FORMATS, reference_path
from dream_hpc.stages.preflight import survey_references


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
    from dream_hpc.references import verify as integrity

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
    if layout.kit is None and rep.good:
        # The record a run checks references against before any compute (references/checksums.py):
        # written now, at sync time, from the files this check found intact.
        from dream_hpc.references.checksums import write_record

        written = write_record(layout.cache, {p: v for p, v in rep.good.items()
                                              if p.is_relative_to(layout.cache / "references")})
        notes.append(f"note: checksum record {'written: ' + str(written) if written else 'not written (read-only cache)'}"
                     " (runs check the references they use against it before any compute)")
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
