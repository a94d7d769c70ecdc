"""Detector1 and Image2 with references kept hot vs read by every step (stages/hot_references.py).

One process, like a rank's worker: the run's `_uncal` files (e.g. bench_xargs_peer.py's simulated FULL
survey, `/tmp/dream-hpc-peer-full_frame/sim`) are calibrated by the real stage functions, each unit
twice in a row, cold (`engine.reference_cache_gb: 0`: each step reads its references, as jwst does) and
hot (the cache on; after the first unit of a kind it holds that kind's references), the order of the
two alternating from unit to unit so drift in the machine's load falls on both. Printed per stage: the
median wall of the cold and hot runs and their ratio (< 1: hot is faster), the per-step time of the
steps that read references, the cache's hit count, and the memory the hot references cost (bytes of
the arrays held, and this process's RSS with the cache full vs emptied: the held arrays live in memory
files, stages/shared_arrays.py, counted in RSS as far as they were touched).

    python bench/bench_hot_references.py RUN_DIR [--units 8] [--stages detector1]

bench/bench_flight_dark.py runs it on a kit whose FULL dark has the flight format (~100+ frames).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np


def rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**30


def peak_rss_gb() -> float:
    """This process's high-water RSS (VmHWM)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a dream-hpc run directory holding the `_uncal` files (and its config)")
    ap.add_argument("--units", type=int, default=8, help="how many units (plan order)")
    ap.add_argument("--work", default="/tmp/dream-hpc-hot-references")
    ap.add_argument("--stages", nargs="+", choices=("detector1", "image2"), default=["detector1", "image2"])
    ap.add_argument("--cache-gb", type=float, default=8.0, help="engine.reference_cache_gb of the hot runs")
    ap.add_argument("--deep-copy", action="store_true",
                    help="also run each unit hot with a deep copy of every reference per step (what the cache did "
                         "before its copy-on-write copies), to compare the two")
    args = ap.parse_args(argv)

    from dream_hpc.config import load_config
    from dream_hpc.core import offline
    from dream_hpc.core.rundir import RunDir
    from dream_hpc.plan.pointings import make_plan
    from dream_hpc.stages import calibrate, hot_references
    from dream_hpc.stages.contract import StageContext

    src = Path(args.run).resolve()
    config = next(p for p in (src / "config.yaml", src.parent / "bench.yaml") if p.is_file())
    cfg = load_config(config)
    refs = cfg.references
    offline.configure(cfg.resolve(refs.crds_path), refs.context, cfg.resolve(refs.mirage_data))
    calibrate.settle_heap()
    import jwst.pipeline  # noqa: F401  (imports outside the timed stages, as the worker's preload)

    units = sorted(make_plan(cfg), key=lambda u: (u.detector, u.unit_id))[: args.units]
    modes = {"cold": dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, reference_cache_gb=0.0)),
             "hot": dataclasses.replace(cfg, engine=dataclasses.replace(cfg.engine, reference_cache_gb=args.cache_gb))}
    if args.deep_copy:
        modes["hot_deepcopy"] = modes["hot"]
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    runs = {m: RunDir.create(work / m) for m in modes}
    for u in units:
        for r in runs.values():
            os.link(src / "exposures" / u.filename("uncal"), r.exposures / u.filename("uncal"))
    stage_fns = {"detector1": calibrate.detector1_unit, "image2": calibrate.image2_unit}
    stages = [s for s in stage_fns if s in args.stages]
    walls: dict[str, dict[str, list[float]]] = {m: {s: [] for s in stages} for m in modes}
    cpus: dict[str, dict[str, list[float]]] = {m: {s: [] for s in stages} for m in modes}
    steps: dict[str, dict[str, list[float]]] = {m: {} for m in modes}
    load0 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    from dream_hpc.stages import shared_arrays

    cow_copy = shared_arrays.private_copy
    names = list(modes)
    for i, u in enumerate(units):
        order = names[i % len(names):] + names[:i % len(names)] if len(names) > 2 else names[::(1 if i % 2 == 0 else -1)]
        for mode in order:
            # hot_deepcopy: the same cache, every step gets the datamodel's own deep copy instead
            shared_arrays.private_copy = (lambda m: m.copy()) if mode == "hot_deepcopy" else cow_copy
            ctx = StageContext(cfg=modes[mode], run=runs[mode])
            for stage in stages:
                t0, c0 = time.perf_counter(), time.process_time()
                result = stage_fns[stage](u, ctx)
                walls[mode][stage].append(time.perf_counter() - t0)
                cpus[mode][stage].append(time.process_time() - c0)
                for step, s in result.step_times.items():
                    steps[mode].setdefault(f"{stage}.{step}", []).append(s)
        c = hot_references._CACHE
        print(f"  {u.unit_id} ({u.detector}): " + "; ".join(
            f"{s} " + " ".join(f"{m} {walls[m][s][-1]:6.2f} s" for m in names) for s in stages)
            + f"; cache hits {c.hits if c else 0}", flush=True)
    load1 = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    cache = hot_references._CACHE
    held_gb = cache.nbytes / 2**30 if cache else 0.0
    full_rss, peak_rss, files_gb = rss_gb(), peak_rss_gb(), shared_arrays.held_bytes() / 2**30
    if cache:
        cache.clear()
    import gc

    gc.collect()
    empty_rss = rss_gb()
    # the first unit of each kind fills the cache (a miss, as cold): the steady state is the rest
    kinds = {}
    for i, u in enumerate(units):
        kinds.setdefault(u.detector, []).append(i)
    warm = [i for idx in kinds.values() for i in idx[1:]]
    print(f"\n== hot vs cold references, {len(units)} units ({', '.join(sorted(kinds))}), "
          f"{units[0].subarray} {units[0].readpatt} x {units[0].ngroups}; load {load0} -> {load1}")
    out = {}
    for stage in stages:
        if "hot_deepcopy" in modes:
            deep, cold = np.array(walls["hot_deepcopy"][stage]), np.array(walls["cold"][stage])
            r = deep[warm] / cold[warm]
            out[f"{stage}_deepcopy"] = {"hot_deepcopy_s": deep.tolist(), "ratio_warm": r.tolist()}
            print(f"  {stage:9s} hot with a deep copy per step: median {np.median(deep[warm]):6.2f} s, ratio to cold "
                  f"{np.median(r):.3f} (per unit: {', '.join(f'{x:.2f}' for x in r)})")
        cold = np.array(walls["cold"][stage])
        hot = np.array(walls["hot"][stage])
        ratio = hot[warm] / cold[warm]
        cpu_cold, cpu_hot = np.array(cpus["cold"][stage]), np.array(cpus["hot"][stage])
        cpu_ratio = cpu_hot[warm] / cpu_cold[warm]
        out[stage] = {"cold_s": cold.tolist(), "hot_s": hot.tolist(), "ratio_warm": ratio.tolist(),
                      "cpu_cold_s": cpu_cold.tolist(), "cpu_hot_s": cpu_hot.tolist(), "cpu_ratio_warm": cpu_ratio.tolist()}
        print(f"  {stage:9s} median cold {np.median(cold[warm]):6.2f} s  hot {np.median(hot[warm]):6.2f} s  "
              f"ratio hot/cold {np.median(ratio):.3f} (units after the first of their kind; per unit: "
              f"{', '.join(f'{r:.2f}' for r in ratio)})")
        print(f"  {stage:9s} CPU (user+sys) median cold {np.median(cpu_cold[warm]):6.2f} s  hot "
              f"{np.median(cpu_hot[warm]):6.2f} s  ratio hot/cold {np.median(cpu_ratio):.3f}; first unit of its kind "
              f"(fills the cache): hot/cold wall {hot[0] / cold[0]:.2f}")
    print("  steps that read references (median s, warm units: cold -> hot):")
    for key in sorted(steps["cold"]):
        step = key.split(".", 1)[1]
        if step in ("dq_init", "saturation", "superbias", "linearity", "dark_current", "jump", "ramp_fit",
                    "clean_flicker_noise", "flat_field"):
            c = np.median(np.array(steps["cold"][key])[warm])
            h = np.median(np.array(steps["hot"][key])[warm])
            deep = (f"  (deep copy: {np.median(np.array(steps['hot_deepcopy'][key])[warm]):6.2f})"
                    if "hot_deepcopy" in steps else "")
            print(f"    {key:32s} {c:6.2f} -> {h:6.2f}{deep}")
    print(f"  memory the hot references cost: {held_gb:.2f} GiB of arrays held ({len(kinds)} kinds), of which "
          f"{files_gb:.2f} GiB in memory files (shared memory: in RSS only where touched); process RSS "
          f"{full_rss:.2f} GiB with them, {empty_rss:.2f} GiB after emptying the cache (memory files then "
          f"{shared_arrays.held_bytes() / 2**30:.2f} GiB); peak RSS of the run, all modes in one process: {peak_rss:.2f} GiB")
    out.update(held_gb=held_gb, memory_files_gb=files_gb, rss_full_gb=full_rss, rss_empty_gb=empty_rss,
               rss_peak_gb=peak_rss, load=[load0, load1],
               hits=cache.hits if cache else 0, misses=cache.misses if cache else 0)
    (work / "hot_results.json").write_text(json.dumps(out, indent=1))
    print(f"raw figures: {work / 'hot_results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
