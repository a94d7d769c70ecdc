"""Detector1 with hot vs cold references when the FULL dark is flight-size (issue 17's <= 0.7x target).

The default kit's FULL dark is readout-matched (a few groups, ~100 MB, in the page cache after one
read), so keeping it hot saves little. Flight NIRCam FULL darks are RAPID ramps of 187 frames (SCI + ERR,
~6.3 GB) that jwst's dark step reads whole and averages to the exposure's readout; their load was
measured at 9-13 s of a FULL Detector1. This bench builds, in a work directory it removes afterwards:
  * a one-detector kit (NRCB1, F150W, BRIGHT2, FULL only) whose FULL dark has the flight format with
    `--frames` frames (`dream-hpc refkit build --flight-dark-frames N`; the default kit is untouched);
  * `--units` FULL exposures of that detector and readout (bench/full_frame.yaml's survey narrowed to
    NRCB1, one dither position per unit), simulated by Mirage;
then runs bench/bench_hot_references.py on them: each unit's Detector1 cold (every step reads its
references) and hot (the cache holds them; `--cache-gb`) in one process like a rank's worker, the two
alternating, and prints hot/cold wall and CPU ratios, the dark step's time in each, and the memory the
hot references cost.

    python bench/bench_flight_dark.py [--frames 108] [--units 4] [--work-root DIR] [--keep]
"""

from __future__ import annotations

import argparse
import importlib.util
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, HERE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def survey_config(kit: Path, work: Path, units: int) -> Path:
    """bench/full_frame.yaml narrowed to NRCB1 with `units` dither positions, pointed at `kit`."""
    cfg = yaml.safe_load((HERE / "full_frame.yaml").read_text())
    cfg["survey"]["name"] = "bench-flight-dark"
    cfg["instrument"]["detectors"] = ["NRCB1"]
    cfg["pointings"]["dither"] = {"points": units, "step_arcsec": 3.0, "pattern": "line"}
    source = work / "flight_dark.yaml"
    source.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return _load("bench_engine").prepare(source, kit, work)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=108,
                    help="frames of the flight-format FULL dark (flight: 187, ~6.3 GB; default 108, ~3.6 GB, "
                         "Mirage's dark length, what a shared 24 GB machine holds twice)")
    ap.add_argument("--units", type=int, default=4)
    ap.add_argument("--cache-gb", type=float, default=8.0)
    ap.add_argument("--work-root", default=None, help="where the temporary work directory goes (default: TMPDIR)")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (kit, exposures, products)")
    ap.add_argument("--results", default=None, help="copy the raw figures (JSON) here")
    ap.add_argument("--deep-copy", action="store_true", help="also measure hot with a deep copy per step")
    args = ap.parse_args(argv)

    from dream_hpc.refkit import build

    work = Path(tempfile.mkdtemp(prefix="dream-hpc-flight-dark-", dir=args.work_root))
    try:
        t0 = time.perf_counter()
        kit = work / "kit"
        build(kit, detectors=["NRCB1"], filters=["F150W"], readpatts=["BRIGHT2"], ngroups_max=4,
              subarrays=["FULL"], flight_dark_frames=args.frames)
        dark = max((kit / "crds_cache" / "references" / "jwst" / "nircam").glob("jwst_nircam_dark_*.fits"),
                   key=lambda p: p.stat().st_size)
        print(f"kit with a {args.frames}-frame flight-format FULL dark ({dark.stat().st_size / 2**30:.2f} GiB) "
              f"in {time.perf_counter() - t0:.0f} s", flush=True)
        config = survey_config(kit, work, args.units)
        from dream_hpc.config import load_config
        from dream_hpc.plan.pointings import make_plan

        run = work / "sim"
        t0 = time.perf_counter()
        for u in make_plan(load_config(config)):
            subprocess.run([sys.executable, str(HERE / "bench_engine.py"), "_simulate", str(config), str(run),
                            u.unit_id], check=True, stdout=subprocess.DEVNULL)
        print(f"{args.units} FULL BRIGHT2 x 4 exposures simulated in {time.perf_counter() - t0:.0f} s", flush=True)
        rc = _load("bench_hot_references").main([str(run), "--units", str(args.units), "--work", str(work / "hot"),
                                                  "--stages", "detector1", "--cache-gb", str(args.cache_gb)]
                                                 + (["--deep-copy"] if args.deep_copy else []))
        if args.results:
            shutil.copy(work / "hot" / "hot_results.json", args.results)
        return rc
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
