"""`dream-hpc provenance|audit|compare|reproduce`: write, check, compare and re-run a run's record."""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict
from pathlib import Path

from dream_hpc.core.errors import UserError


def _cmd_provenance(args: argparse.Namespace) -> int:
    from dream_hpc.provenance.read import ProvenanceError, load
    from dream_hpc.provenance.write import consolidate

    try:
        path = consolidate(args.run)
    except ProvenanceError as e:
        raise UserError(str(e)) from None
    view = load(path)
    r = view["run"]
    print(f"{path}: {len(view['units'])} units ({r.get('n_units_done', 0)} done, {r.get('n_units_failed', 0)} "
          f"failed, {r.get('n_units_timeout', 0)} timed out, {r.get('n_units_incomplete', 0)} incomplete), "
          f"{len(view['mosaics'])} mosaics, {len(view['attempts'])} attempt(s); "
          f"journal digest {view['root'].get('journal_digest', '')[:16]}")
    return 0


def _cmd_reproduce(args: argparse.Namespace) -> int:
    from dream_hpc.drivers.reproduce import run_reproduce

    return run_reproduce(args)


def add_commands(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("provenance", help="(re)build RUN/provenance.h5 from the run's journal")
    p.add_argument("run", help="run directory")
    p.set_defaults(func=_cmd_provenance)

    p = sub.add_parser("audit", help="report on a run and verify its record and every product against it")
    p.add_argument("path", help="RUN/provenance.h5 or the run directory")
    p.add_argument("--prov-json", metavar="FILE", help="also export W3C PROV-JSON to FILE")
    p.add_argument("--skip-products", action="store_true", help="do not re-hash products on disk (quick)")
    p.set_defaults(func=_cmd_audit)

    p = sub.add_parser("compare", help="did run B reproduce run A? software, references, parameters, pixels "
                                       "(exit 0 reproduced, 1 not reproduced, 3 incomplete)")
    p.add_argument("a", help="provenance.h5 (or run directory) of the reference run")
    p.add_argument("b", help="provenance.h5 (or run directory) of the run to check")
    p.add_argument("--json", metavar="FILE", help="also write the full comparison as JSON")
    p.set_defaults(func=_cmd_compare)

    p = sub.add_parser("reproduce", help="re-run a recorded run from its provenance, refusing on drift")
    p.add_argument("record", help="provenance.h5 (or run directory) of the run to reproduce")
    p.add_argument("--out", required=True, help="new run directory")
    p.add_argument("--allow-drift", action="store_true",
                   help="run even if software, references or MIRAGE_DATA differ (the drift is recorded)")
    p.add_argument("--base", help="directory the recorded config's relative paths resolve against "
                                  "(default: the recorded config's directory if it exists, else the current one)")
    p.add_argument("--crds-path", help="this machine's copy of the CRDS cache (default: from the config)")
    p.add_argument("--mirage-data", help="this machine's copy of MIRAGE_DATA (default: from the config)")
    p.add_argument("--catalog", help="this machine's copy of the catalog (default: from the config)")
    p.add_argument("--photometry", help="this machine's copy of the catalog's photometry table, for a DREaM "
                                        "main + photometry pair (default: from the config)")
    p.add_argument("--check-only", action="store_true", help="only report drift; do not run")
    p.set_defaults(func=_cmd_reproduce)


def _cmd_audit(args: argparse.Namespace) -> int:
    from dream_hpc.provenance.audit import audit, capped, report
    from dream_hpc.provenance.read import FILENAME, ProvenanceError
    from dream_hpc.provenance.write import consolidate

    last = [0.0]

    def progress(i: int, n: int) -> None:
        if n >= 20 and (time.monotonic() - last[0] > 2 or i == n):
            last[0] = time.monotonic()
            print(f"verifying products: {i}/{n}", file=sys.stderr, flush=True)

    try:
        run_dir = Path(args.path)
        if run_dir.is_dir() and not (run_dir / FILENAME).is_file() and (run_dir / "journal").is_dir():
            # a run nobody consolidated yet (e.g. `dream-hpc run` still going, or killed): build it now
            print(f"{consolidate(run_dir)}: built from the journal", file=sys.stderr)
        result = audit(args.path, verify_products=not args.skip_products, progress=progress)
    except ProvenanceError as e:
        raise UserError(str(e)) from None
    print("\n".join(report(result)))
    if args.prov_json:
        from dream_hpc.provenance.prov_json import write_prov_json

        out = write_prov_json(result.view, args.prov_json)
        print(f"prov-json   {out}")
    if result.problems:
        print(f"\n{len(result.problems)} problem(s):", file=sys.stderr)
        for line in capped(result.problems):
            print(f"  {line}", file=sys.stderr)
        print(f"audit: FAILED ({len(result.problems)} problem(s))", file=sys.stderr)
        return 1
    print("audit: OK (record intact" + (", every product matches)" if not args.skip_products else
                                         "; products not checked)"))
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from dream_hpc.provenance.compare import compare, report
    from dream_hpc.provenance.read import ProvenanceError

    try:
        cmp = compare(args.a, args.b)
    except ProvenanceError as e:
        raise UserError(str(e)) from None
    print("\n".join(report(cmp)))
    if args.json:
        from dream_hpc.core.rundir import atomic_write_text

        atomic_write_text(args.json, json.dumps(asdict(cmp) | {"verdict": cmp.verdict, "reproduced": cmp.reproduced,
                                                               "exit_code": cmp.exit_code}, indent=1) + "\n")
    sys.stdout.flush()
    return cmp.exit_code
