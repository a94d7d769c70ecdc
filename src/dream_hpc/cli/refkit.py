"""`dream-hpc refkit build`: the command-line face of the reference kit."""

from __future__ import annotations

import argparse
import sys


def add_commands(sub: argparse._SubParsersAction) -> None:
    from dream_hpc.refkit.builder import (
        DEFAULT_DETECTORS,
        DEFAULT_FILTERS,
        DEFAULT_NGROUPS_MAX,
        DEFAULT_READPATTS,
        DEFAULT_SEED,
    )

    p = sub.add_parser("refkit", help="offline reference kit (synthetic CRDS cache + MIRAGE_DATA)")
    rsub = p.add_subparsers(dest="refkit_command", metavar="ACTION")
    b = rsub.add_parser("build", help="write a reference kit for the given detectors/filters",
                        description="Write, deterministically from --seed, a synthetic NIRCam imaging CRDS "
                                    "cache (DIR/crds_cache), MIRAGE_DATA tree (DIR/mirage_data) and manifest.")
    b.add_argument("--out", required=True, help="kit directory (new, empty, or an existing kit to replace)")
    b.add_argument("--detectors", nargs="+", default=list(DEFAULT_DETECTORS), metavar="DET",
                   help=f"NIRCam detectors (default: {' '.join(DEFAULT_DETECTORS)})")
    b.add_argument("--filters", nargs="+", default=list(DEFAULT_FILTERS), metavar="FILTER",
                   help="filters; short-wave ones go to short-wave detectors, long-wave ones to long-wave "
                        f"detectors (default: {' '.join(DEFAULT_FILTERS)})")
    b.add_argument("--readpatt", nargs="+", default=list(DEFAULT_READPATTS), metavar="PATTERN", dest="readpatts",
                   help=f"read patterns to carry darks for (default: {' '.join(DEFAULT_READPATTS)})")
    b.add_argument("--subarrays", nargs="+", default=None, metavar="SUBARRAY",
                   help="subarrays to carry darks for (jwst needs one per subarray; default: every subarray "
                        "each detector has)")
    b.add_argument("--ngroups-max", type=int, default=DEFAULT_NGROUPS_MAX, metavar="N",
                   help=f"longest exposure (groups) the darks cover (default: {DEFAULT_NGROUPS_MAX})")
    b.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})")
    b.set_defaults(func=_build)
    p.set_defaults(func=lambda _args: p.print_help() or 2)


def _build(args: argparse.Namespace) -> int:
    from dream_hpc.refkit import build

    def say(msg: str) -> None:
        print(f"[refkit] {msg}", flush=True)

    manifest = build(args.out, detectors=args.detectors, filters=args.filters, readpatts=args.readpatts,
                     ngroups_max=args.ngroups_max, seed=args.seed, subarrays=args.subarrays, progress=say)
    print(manifest, file=sys.stdout)
    return 0
