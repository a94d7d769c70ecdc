"""`dream-hpc report RUN`: the run's one-page HTML report, RUN/report.html (drivers/report.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def _cmd_report(args: argparse.Namespace) -> int:
    from dream_hpc.config import load_config
    from dream_hpc.core.errors import UserError
    from dream_hpc.core.rundir import RunDir
    from dream_hpc.drivers.report import write_report

    root = Path(args.run)
    if not (root / "journal").is_dir():
        raise UserError(f"{root}: not a dream-hpc run directory (no journal/; give the --out of a run)")
    cfg = load_config(args.config) if args.config else None
    path = write_report(RunDir(root.resolve()), cfg, args.out, verify_products=args.verify_products,
                        audit_record=True if args.audit else None)
    print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0


def add_commands(sub: Any) -> None:
    p = sub.add_parser("report", help="write RUN/report.html: verdict, failures, run, science, provenance on one page",
                       description="Write one self-contained HTML page for a run (images embedded, no scripts, "
                                   "nothing fetched: open it offline or from a copied run directory). Works while "
                                   "the run is still going: the page shows what the journal holds so far and says so.")
    p.add_argument("run", help="run directory (the --out of dream-hpc run/survey)")
    p.add_argument("--out", help="write the page here instead of RUN/report.html")
    p.add_argument("--config", help="the survey config, if RUN/config.yaml's relative paths do not resolve "
                                    "(default: the recorded config file, else RUN/config.yaml)")
    p.add_argument("--audit", action="store_true",
                   help="audit the record for the page also when the run has over 1,000 units (minutes)")
    p.add_argument("--verify-products", action="store_true",
                   help="also re-hash every recorded product in the audit (slow for big runs)")
    p.set_defaults(func=_cmd_report)
