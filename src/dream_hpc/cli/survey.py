"""`dream-hpc survey`: a whole survey on this machine (drivers/survey.py)."""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_survey(args: argparse.Namespace) -> int:
    from dream_hpc.config import load_config
    from dream_hpc.drivers.survey import run_survey

    code, _ = run_survey(load_config(args.config), args.out, quiet=args.quiet, strict=args.strict)
    return code


def add_commands(sub: Any) -> None:
    p = sub.add_parser("survey", help="run a whole survey on this machine (simulate -> Image3 -> science check)",
                       description="Run every stage of a survey in one process tree on this machine: `dream-hpc "
                                   "run` (simulate, Detector1 and Image2 per exposure, Image3 per filter) followed "
                                   "by the science check, summary.json and provenance.h5. Rerun to resume.")
    p.add_argument("config", help="survey config (YAML), e.g. config/demo.yaml")
    p.add_argument("--out", required=True, help="run directory (created; rerun with the same config to resume)")
    p.add_argument("--quiet", action="store_true", help="no progress display or printed summary")
    p.add_argument("--strict", action="store_true",
                   help="exit 4 when a science check failed (completeness, astrometry vs truth, photometry)")
    p.set_defaults(func=_cmd_survey)
