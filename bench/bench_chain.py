"""Benchmark two chain-level savings in one process, as ratios against their baselines.

(1) Heap freeze: stpipe runs gc.collect() before every step; with jwst, Mirage and the catalog
    loaded each collection walks millions of long-lived objects. `calibrate.settle_heap` freezes
    them first. Measured: Detector1 + Image2 on the same unit with settle_heap as a no-op
    (baseline, heap unfrozen) and as shipped.
(2) dark_prep reuse: Mirage's dark_prep product depends only on the dark and the readout, so the
    run caches it. Measured: simulate with an empty cache (baseline: dark_prep runs) and with it
    filled, on the same unit; the uncal pixels must be identical.

    python bench/bench_chain.py [--config tests/data/small_survey.yaml] [--kit build/refkit] [--work DIR] [--repeat 3]
"""

from __future__ import annotations

import argparse
import gc
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "tests" / "data" / "small_survey.yaml"))  # SUB400P: comparable
    ap.add_argument("--kit", default=str(ROOT / "build" / "refkit"))
    ap.add_argument("--work", default=None, help="scratch directory (default: a new temp dir)")
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-chain-"))
    work.mkdir(parents=True, exist_ok=True)
    kit = Path(args.kit).resolve()

    cfg_dict = yaml.safe_load(Path(args.config).read_text())
    cfg_dict["references"].update(crds_path=str(kit / "crds_cache"), mirage_data=str(kit / "mirage_data"))
    cfg_dict["catalog"]["path"] = str(work / "catalog.ecsv")
    cfg_dict["pointings"].update(rows=1, cols=1)
    config = work / "bench.yaml"
    config.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))

    from dream_hpc.catalog import synth as catalog_synth
    from dream_hpc.plan import pointings
    from dream_hpc.stages import preflight

    cfg = preflight.load_offline(config)  # offline before crds/jwst/mirage are imported
    units = pointings.make_plan(cfg)
    catalog_synth.write_table(catalog_synth.synthesize(cfg, units), work / "catalog.ecsv", cfg)
    cfg = preflight.load_offline(config)
    unit = units[0]

    import numpy as np
    from astropy.io import fits

    from dream_hpc.core.rundir import RunDir
    from dream_hpc.stages import calibrate, simulate
    from dream_hpc.stages.contract import StageContext

    def fresh_run(name: str) -> tuple[RunDir, StageContext]:
        run = RunDir.create(work / name)
        return run, StageContext(cfg=cfg, run=run)

    # (2) dark_prep reuse
    cold, warm = [], []
    pixels = []
    for i in range(args.repeat):
        run, ctx = fresh_run(f"sim{i}")
        t0 = time.perf_counter()
        simulate.simulate_unit(unit, ctx)  # empty cache: dark_prep runs and fills it
        cold.append(time.perf_counter() - t0)
        uncal = run.exposures / unit.filename("uncal")
        pixels.append(fits.getdata(uncal, "SCI"))
        uncal.unlink()
        t0 = time.perf_counter()
        simulate.simulate_unit(unit, ctx)  # cache filled
        warm.append(time.perf_counter() - t0)
        pixels.append(fits.getdata(uncal, "SCI"))
    identical = all(np.array_equal(pixels[0], p) for p in pixels[1:])

    # (1) heap freeze, on the uncal of the last run
    shipped = calibrate.settle_heap
    frozen, unfrozen = [], []
    for i in range(args.repeat):
        for label, times in (("unfrozen", unfrozen), ("frozen", frozen)):
            run2, ctx2 = fresh_run(f"cal{i}{label}")
            shutil.copy(uncal, run2.exposures / uncal.name)
            gc.unfreeze()
            calibrate.settle_heap = shipped if label == "frozen" else (lambda: None)
            t0 = time.perf_counter()
            calibrate.detector1_unit(unit, ctx2)
            calibrate.image2_unit(unit, ctx2)
            times.append(time.perf_counter() - t0)
    calibrate.settle_heap = shipped
    gc.unfreeze()
    n_objects = len(gc.get_objects())

    med = statistics.median
    print(f"unit {unit.unit_id} ({unit.aperture}, {unit.readpatt} x{unit.ngroups}), {args.repeat} repeats, "
          f"medians; objects the cyclic collector tracks in this process: {n_objects:,}")
    print(f"  simulate, dark_prep runs      {med(cold):6.2f} s")
    print(f"  simulate, dark_prep reused    {med(warm):6.2f} s   ratio {med(cold) / med(warm):.2f}x   "
          f"pixels identical: {identical}")
    print(f"  detector1+image2, heap live   {med(unfrozen):6.2f} s")
    print(f"  detector1+image2, heap frozen {med(frozen):6.2f} s   ratio {med(unfrozen) / med(frozen):.2f}x")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
