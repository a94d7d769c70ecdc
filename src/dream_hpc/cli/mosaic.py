"""`dream-hpc mosaic`: Image3 per filter over units an earlier run finished (drivers/mosaic.py)."""

from __future__ import annotations

import argparse
from typing import Any


def _cmd_mosaic(args: argparse.Namespace) -> int:
    from dream_hpc.config import load_config
    from dream_hpc.drivers.mosaic import make_mosaics

    return make_mosaics(load_config(args.config), args.out, args.filter, args.quiet, args.strict)


def add_commands(sub: Any) -> None:
    p = sub.add_parser("mosaic", help="run Image3 per filter over the finished exposures of a run",
                       description="Run jwst Image3 once per filter over the exposures a run has finished (their "
                                   "checksums verified; nothing else is computed), then the science check, "
                                   "summary.json and provenance.h5.")
    p.add_argument("config", help="survey config (YAML)")
    p.add_argument("--out", required=True, help="run directory holding exposures/*_cal.fits")
    p.add_argument("--filter", help="only this filter (e.g. F150W)")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.add_argument("--strict", action="store_true", help="exit 4 when a science check failed")
    p.set_defaults(func=_cmd_mosaic)
