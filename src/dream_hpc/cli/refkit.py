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
        FLIGHT_DARK_FRAMES,
    )

    p = sub.add_parser("refkit", help="offline reference kit (synthetic CRDS cache + MIRAGE_DATA)")
    rsub = p.add_subparsers(dest="refkit_command", metavar="ACTION")
    b = rsub.add_parser("build", help="write a reference kit for the given detectors/filters",
                        description="Write, deterministically from --seed, a synthetic NIRCam imaging CRDS "
                                    "cache (DIR/crds_cache), MIRAGE_DATA tree (DIR/mirage_data) and manifest.")
    b.add_argument("--for", dest="for_config", metavar="CONFIG",
                   help="build the kit this survey config needs: its detectors, filters, read pattern, groups and "
                        "subarray (explicit options below override); --out defaults to where the config looks")
    b.add_argument("--out", help="kit directory (new, empty, or an existing kit to replace)")
    b.add_argument("--detectors", nargs="+", default=None, metavar="DET",
                   help=f"NIRCam detectors (default: {' '.join(DEFAULT_DETECTORS)})")
    b.add_argument("--filters", nargs="+", default=None, metavar="FILTER",
                   help="filters; short-wave ones go to short-wave detectors, long-wave ones to long-wave "
                        f"detectors (default: {' '.join(DEFAULT_FILTERS)})")
    b.add_argument("--readpatt", nargs="+", default=None, metavar="PATTERN", dest="readpatts",
                   help=f"read patterns to carry darks for (default: {' '.join(DEFAULT_READPATTS)})")
    b.add_argument("--subarrays", nargs="+", default=None, metavar="SUBARRAY",
                   help="subarrays to carry darks for (jwst needs one per subarray; default: every subarray "
                        "each detector has)")
    b.add_argument("--ngroups-max", type=int, default=None, metavar="N",
                   help=f"longest exposure (groups) the darks cover (default: {DEFAULT_NGROUPS_MAX})")
    b.add_argument("--seed", type=int, default=DEFAULT_SEED, help=f"random seed (default: {DEFAULT_SEED})")
    b.add_argument("--flight-dark-frames", type=int, default=0, metavar="N",
                   help="write each detector's FULL dark in the flight format: one RAPID dark of N frames (SCI + "
                        "ERR, ~34 MB a frame) that jwst averages to every read pattern, as flight darks "
                        f"({FLIGHT_DARK_FRAMES} frames, ~6.3 GB) are; for measuring dark loads (default 0: small "
                        "readout-matched darks)")
    b.set_defaults(func=_build)
    p.set_defaults(func=lambda _args: p.print_help() or 2)


def _build(args: argparse.Namespace) -> int:
    from dream_hpc.core.errors import UserError
    from dream_hpc.refkit import build
    from dream_hpc.refkit.builder import (
        DEFAULT_DETECTORS,
        DEFAULT_FILTERS,
        DEFAULT_NGROUPS_MAX,
        DEFAULT_READPATTS,
    )

    wanted = {"detectors": list(DEFAULT_DETECTORS), "filters": list(DEFAULT_FILTERS),
              "readpatts": list(DEFAULT_READPATTS), "ngroups_max": DEFAULT_NGROUPS_MAX, "subarrays": None}
    out = args.out
    if args.for_config:
        from dream_hpc.config import load_config
        from dream_hpc.refkit.for_config import kit_request

        req = kit_request(load_config(args.for_config))
        wanted = {"detectors": req.detectors, "filters": req.filters, "readpatts": req.readpatts,
                  "ngroups_max": req.ngroups_max, "subarrays": req.subarrays}
        out = out or str(req.out)
    if not out:
        raise UserError("refkit build: give --out DIR (or --for CONFIG, which builds where the config looks)")
    for key in wanted:
        if getattr(args, key) is not None:
            wanted[key] = getattr(args, key)

    def say(msg: str) -> None:
        print(f"[refkit] {msg}", flush=True)

    manifest = build(out, seed=args.seed, progress=say, flight_dark_frames=args.flight_dark_frames, **wanted)
    print(manifest, file=sys.stdout)
    return 0
