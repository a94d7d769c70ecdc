"""Measure real Image3 runs and compare them with the cost model (`dream_hpc.cost.image3_cost`).

Takes a finished run (the `_cal` files of `dream-hpc survey` or `dream-hpc run`, e.g. `make demo`'s
runs/demo) and, per filter and per input count N, runs dream-hpc's own Image3 stage
(`dream_hpc.stages.image3.run_mosaic`: tweakreg with the local reference catalog, skymatch,
outlier_detection, resample, source_catalog, the preview PNG) over the first N exposures, each
in a fresh process in a scratch run directory whose exposures/ holds hard links to (or copies of) the run's `_cal` files.
Measured per run: CPU seconds of the stage (jwst already imported, as in an engine rank) and of
each step (wall seconds too), and the process's peak RSS. Printed beside them: the model's CPU seconds
and MB for the same inputs and mosaic size, and measured / model ratios (1.0 = the model is right).

    python bench/bench_image3_cost.py [--config config/demo.yaml] [--run runs/demo] [--inputs 2 4 8 12]
                                      [--filters F150W F277W] [--scratch DIR] [--json out.json]

The run directory is only read; every product goes to --scratch (a temporary directory by default).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

STEPS = ("tweakreg", "skymatch", "outlier_detection", "resample", "source_catalog")


def count_polygon_work() -> dict[str, float]:
    """Count spherical-polygon intersections and unions (tweakreg's and skymatch's overlap tests: ~0.1 s
    each for overlapping footprints, ~5 ms for disjoint ones) and the CPU seconds they take."""
    from spherical_geometry.polygon import SphericalPolygon

    tally = {"calls": 0, "cpu_s": 0.0, "depth": 0}

    def counted(method: Any) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            tally["depth"] += 1
            t0 = time.process_time()
            try:
                return method(*args, **kwargs)
            finally:
                tally["depth"] -= 1
                if tally["depth"] == 0:  # outermost call only: unions call intersections inside
                    tally["calls"] += 1
                    tally["cpu_s"] += time.process_time() - t0
        return wrapper

    SphericalPolygon.intersection = counted(SphericalPolygon.intersection)
    SphericalPolygon.multi_union = classmethod(counted(SphericalPolygon.multi_union.__func__))
    return tally


def child(config: str, run_root: str, scratch: str, filt: str, unit_ids: list[str]) -> dict[str, Any]:
    """One Image3 in this process (a fresh one): the facts the model is fitted to, as a dict."""
    import logging

    from dream_hpc.core.rundir import RunDir
    from dream_hpc.plan import cost
    from dream_hpc.plan.pointings import make_plan
    from dream_hpc.stages import preflight
    from dream_hpc.stages.contract import StageContext, product_path
    from dream_hpc.stages.image3 import run_mosaic

    cfg = preflight.load_offline(config)
    t0 = time.perf_counter()
    import jwst.pipeline  # noqa: F401  (an engine rank has it imported already)
    import_s = time.perf_counter() - t0
    wanted = set(unit_ids)
    units = [u for u in make_plan(cfg) if u.unit_id in wanted]
    source, run = RunDir(Path(run_root).resolve()), RunDir.create(scratch)
    # the run's prepared catalog, as the engine's Image3 reads it: without it the stage prepares one for
    # these units only, which lacks the reference band of a long-wave filter's abs_refcat (F150W for
    # F277W): tweakreg then had no absolute fit and the long-wave runs measured too cheap
    from dream_hpc.catalog.prepared import RUN_FILE

    if (source.root / RUN_FILE).is_file() and not (run.root / RUN_FILE).exists():
        (run.root / RUN_FILE).parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source.root / RUN_FILE, run.root / RUN_FILE)
        except OSError:
            shutil.copy2(source.root / RUN_FILE, run.root / RUN_FILE)
    for u in units:
        link = product_path(run, u, "image2")
        if not link.exists():  # a real file: the stage checks that its inputs lie inside the run
            try:
                os.link(product_path(source, u, "image2"), link)
            except OSError:  # another file system
                shutil.copy2(product_path(source, u, "image2"), link)
    log = logging.getLogger("bench_image3_cost")
    log.addHandler(logging.FileHandler(run.logs / "image3.log"))
    step_cpu: dict[str, float] = {}
    started: dict[str, float] = {}

    def emit(kind: str, **data: Any) -> None:  # step start/done events: CPU seconds per step
        if kind == "step" and data.get("status") == "start":
            started[data["step"]] = time.process_time()
        elif kind == "step" and data.get("step") in started:
            step_cpu[data["step"]] = step_cpu.get(data["step"], 0.0) + time.process_time() - started.pop(data["step"])

    ctx = StageContext(cfg=cfg, run=run, emit=emit, log=log)
    polygons = count_polygon_work()
    cpu0, wall0 = time.process_time(), time.perf_counter()
    result = run_mosaic(filt, units, ctx)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    cat_rows = sum(1 for line in (run.root / result.extra["cat"]).read_text().splitlines()
                   if line and not line.startswith("#")) - 1  # less the header row
    shape = result.extra["shape"]
    return {"filter": filt.upper(), "subarray": units[0].subarray, "n_inputs": len(units),
            "input_pixels": sum(cost.unit_pixels(u) for u in units), "output_pixels": int(shape[0] * shape[1]),
            "shape": shape, "cpu_s": cpu, "wall_s": wall, "import_s": import_s, "peak_rss_mb": rss_mb,
            "step_s": {k: step_cpu.get(k, 0.0) for k in STEPS},
            "step_wall_s": {k: result.step_times.get(k, 0.0) for k in STEPS}, "n_catalog": cat_rows,
            "n_refcat_stars": result.extra["n_refcat_stars"],
            "polygon_ops": polygons["calls"], "polygon_cpu_s": polygons["cpu_s"], "tweakreg_fitted": result.extra["tweakreg"]["fitted"]}


def measure(config: Path, run_root: Path, scratch: Path, filt: str, unit_ids: list[str]) -> dict[str, Any]:
    """`child` in a fresh interpreter, so the peak RSS is this Image3's alone."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(config), str(run_root), str(scratch),
           filt, *unit_ids]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"Image3 {filt} over {len(unit_ids)} inputs failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def with_model(m: dict[str, Any]) -> dict[str, Any]:
    from dream_hpc.plan import cost

    c = cost.image3_cost(m["n_inputs"], m["input_pixels"], m["output_pixels"])
    return {**m, "model_cpu_s": c.cpu_s, "model_mem_mb": c.mem_mb,
            "cpu_ratio": m["cpu_s"] / c.cpu_s, "mem_ratio": m["peak_rss_mb"] / c.mem_mb}


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'filter':7s} {'subarray':8s} {'N':>3s} {'in Mpix':>8s} {'out Mpix':>8s} {'cat':>5s} | "
            + " ".join(f"{s[:8]:>8s}" for s in STEPS)
            + f" | {'cpu s':>7s} {'model':>7s} {'ratio':>5s} | {'RSS MB':>7s} {'model':>7s} {'ratio':>5s}")
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r['filter']:7s} {r['subarray']:8s} {r['n_inputs']:3d} {r['input_pixels'] / 1e6:8.2f} "
                     f"{r['output_pixels'] / 1e6:8.2f} {r['n_catalog']:5d} | "
                     + " ".join(f"{r['step_s'][s]:8.1f}" for s in STEPS)
                     + f" | {r['cpu_s']:7.1f} {r['model_cpu_s']:7.1f} {r['cpu_ratio']:5.2f} | "
                     f"{r['peak_rss_mb']:7.0f} {r['model_mem_mb']:7.0f} {r['mem_ratio']:5.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        config, run_root, scratch, filt, *unit_ids = argv[1:]
        print(json.dumps(child(config, run_root, scratch, filt, unit_ids)))
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"), help="the run's survey config")
    ap.add_argument("--run", default=str(ROOT / "runs" / "demo"), help="a run directory with finished _cal files")
    ap.add_argument("--inputs", type=int, nargs="+", default=[2, 4, 8, 12], help="input counts to measure")
    ap.add_argument("--filters", nargs="+", help="filters to measure (default: every filter of the run)")
    ap.add_argument("--scratch", help="where the Image3 products go (default: a temporary directory, removed)")
    ap.add_argument("--json", help="also write the measurements here")
    args = ap.parse_args(argv)

    from dream_hpc.core.rundir import RunDir
    from dream_hpc.plan.pointings import make_plan
    from dream_hpc.stages import preflight
    from dream_hpc.stages.contract import product_path

    config, run_root = Path(args.config).resolve(), Path(args.run).resolve()
    if not (run_root / "exposures").is_dir():
        print(f"{run_root}: not a run directory (run `make demo` or `dream-hpc survey CONFIG --out RUN` first)")
        return 2
    run = RunDir(run_root)
    by_filter: dict[str, list[Any]] = {}
    for u in make_plan(preflight.load_offline(config)):  # products are written atomically: present = finished
        if product_path(run, u, "image2").is_file():
            by_filter.setdefault(u.filter.upper(), []).append(u)
    filters = [f.upper() for f in args.filters] if args.filters else sorted(by_filter)
    scratch = Path(args.scratch) if args.scratch else Path(tempfile.mkdtemp(prefix="bench_image3_cost."))
    rows: list[dict[str, Any]] = []
    try:
        for filt in filters:
            units = sorted(by_filter.get(filt, []), key=lambda u: u.unit_id)
            for n in sorted(set(args.inputs)):
                if n > len(units):
                    print(f"{filt}: only {len(units)} finished exposures, skipping N={n}", file=sys.stderr)
                    continue
                where = scratch / f"{filt.lower()}_n{n:03d}"
                shutil.rmtree(where, ignore_errors=True)
                m = with_model(measure(config, run_root, where, filt, [u.unit_id for u in units[:n]]))
                rows.append(m)
                print(f"{filt} N={n}: {m['cpu_s']:.1f} CPU-s (model {m['model_cpu_s']:.1f}), "
                      f"{m['peak_rss_mb']:.0f} MB (model {m['model_mem_mb']:.0f})", file=sys.stderr, flush=True)
    finally:
        if not args.scratch:
            shutil.rmtree(scratch, ignore_errors=True)
    print(table(rows))
    if rows:
        cpu = [r["cpu_ratio"] for r in rows]
        mem = [r["mem_ratio"] for r in rows]
        print(f"measured / model: CPU {min(cpu):.2f}-{max(cpu):.2f}, peak memory {min(mem):.2f}-{max(mem):.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
