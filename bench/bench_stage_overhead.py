"""Measure, per stage, the time spent inside a stage but outside its Mirage phases / jwst steps, and where.

The engine's overhead figure (bench_engine.py) counts as work only the time inside "step" events
(Mirage's seed, dark_prep, obs_generator; each jwst step; since this bench was written also
Detector1/Image2's "read" of their input and "save" of their product). This runs the real chain in
one process, the way a worker does (jwst and Mirage preloaded, INFO logging to a file, the three
stages of each unit in turn), and prints for each stage: wall time, time in steps, time outside
steps (also as this process's CPU time, steadier than wall when the machine is shared), and that
outside time split by what it went to: our input checks, pipeline building, hashing, reference
lookups, catalog cuts, the Mirage yaml; jwst's own pipeline-level work (opening the input,
prefetching references); Mirage's own work between its phases. Each label is timed only while no
step is running, exclusive of the labels inside it; "other" is the remainder. Labels whose code
does not exist in the version measured are skipped, so an older checkout can be measured the same
way (`PYTHONPATH=<old>/src python bench/bench_stage_overhead.py`).

The first `--warmup` units (default 2: one per detector of the demo) pay one-off costs of the process
(CRDS mappings, the catalog read, the first full garbage collection, reference digests not yet in
the machine's digest cache: set DREAM_HPC_CACHE_DIR to an empty directory to see a first run); they
are reported apart from the `--units` units measured after them, which are what every further unit
of a long run costs.

    python bench/bench_stage_overhead.py [--config tests/data/small_survey.yaml] [--kit build/refkit] [--work DIR]
                                         [--warmup 2] [--units 4]
"""

from __future__ import annotations

import argparse
import importlib
import logging
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]

# (module, attribute path, label): what the outside-step time is attributed to. Nested labels are
# exclusive (an inner label's time is not counted again in the outer one). Probes whose target does
# not exist in the code measured are skipped, so the same script measures older versions too.
PROBES = [
    ("dream_hpc.stages.calibrate", "_check_input", "check input FITS"),
    ("dream_hpc.stages.calibrate", "settle_heap", "settle heap (gc)"),
    ("dream_hpc.stages.calibrate", "build_pipeline", "build pipeline (pars-* refs)"),
    ("stpipe.pipeline", "Pipeline.get_pars", "get_pars (record + jwst log)"),
    ("jwst.stpipe.core", "JwstStep.prepare_output", "jwst: open input"),
    ("stpipe.step", "Step.prefetch", "jwst: prefetch refs"),
    ("dream_hpc.stages.calibrate", "save_product", "save product"),
    ("dream_hpc.stages.calibrate", "references_used", "refs used"),
    ("dream_hpc.core.digests", "sha256_file", "sha256 of files"),
    ("dream_hpc.stages.calibrate", "run_pipeline", "jwst: pipeline other"),
    ("dream_hpc.catalog.reader", "load_catalog", "catalog read"),
    ("dream_hpc.catalog.reader", "select_for_unit", "catalog cut"),
    ("dream_hpc.catalog.reader", "write_mirage_catalogs", "write Mirage lists"),
    ("dream_hpc.stages.mirage_inputs", "mirage_references", "CRDS lookup"),
    ("dream_hpc.refkit", "mirage_paths", "kit paths"),
    ("dream_hpc.stages.mirage_inputs", "mirage_params", "Mirage yaml"),
    ("dream_hpc.stages.mirage_inputs", "dark_cache_path", "dark cache key"),
    ("dream_hpc.core.digests", "file_sha256", "sha256 of files"),
    ("dream_hpc.stages.simulate", "_count_rows", "count sources"),
    ("mirage.imaging_simulator", "ImgSim.create", "Mirage: between phases"),
]


class Meter:
    """Step state from the stage's events: wall and CPU time in steps, exclusive outside-step time per label."""

    def __init__(self) -> None:
        self.open_steps: dict[str, tuple[float, float]] = {}
        self.step_s = self.step_cpu = 0.0
        self.labels: dict[str, float] = defaultdict(float)
        self._stack: list[list[float]] = []  # per open probe: [time taken by nested probes and steps]

    def reset(self) -> None:
        self.step_s = self.step_cpu = 0.0
        self.labels = defaultdict(float)

    def emit(self, kind: str, **data: Any) -> None:
        if kind != "step":
            return
        now, cpu = time.perf_counter(), time.process_time()
        if data["status"] == "start":
            self.open_steps[data["step"]] = (now, cpu)
        elif data["status"] in ("done", "failed") and data["step"] in self.open_steps:
            t0, c0 = self.open_steps.pop(data["step"])
            self.step_s += now - t0
            self.step_cpu += cpu - c0
            if self._stack:
                self._stack[-1][0] += now - t0

    def wrap(self, func: Callable, label: str) -> Callable:
        meter = self

        def probe(*args: Any, **kwargs: Any) -> Any:
            if meter.open_steps:  # inside a step: not overhead
                return func(*args, **kwargs)
            meter._stack.append([0.0])
            t0 = time.perf_counter()
            try:
                return func(*args, **kwargs)
            finally:
                took = time.perf_counter() - t0
                inner = meter._stack.pop()[0]
                meter.labels[label] += took - inner
                if meter._stack:
                    meter._stack[-1][0] += took

        probe.__wrapped__ = func  # type: ignore[attr-defined]
        return probe


def install(meter: Meter) -> None:
    for module, attr, label in PROBES:
        owner: Any = importlib.import_module(module)
        *path, name = attr.split(".")
        for part in path:
            owner = getattr(owner, part)
        original = (owner.__dict__ if isinstance(owner, type) else vars(owner)).get(name)
        if callable(original):
            setattr(owner, name, meter.wrap(original, label))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "tests" / "data" / "small_survey.yaml"))  # SUB400P: comparable
    ap.add_argument("--kit", default=str(ROOT / "build" / "refkit"))
    ap.add_argument("--work", default=None, help="scratch directory (default: a new temp dir, removed after)")
    ap.add_argument("--warmup", type=int, default=2, help="units run first and reported apart (one-off costs)")
    ap.add_argument("--units", type=int, default=4, help="units measured after the warm-up")
    args = ap.parse_args()
    work = Path(args.work or tempfile.mkdtemp(prefix="bench-stage-overhead-"))
    work.mkdir(parents=True, exist_ok=True)
    kit = Path(args.kit).resolve()

    cfg_dict = yaml.safe_load(Path(args.config).read_text())
    cfg_dict["references"].update(crds_path=str(kit / "crds_cache"), mirage_data=str(kit / "mirage_data"))
    cfg_dict["catalog"]["path"] = str(work / "catalog.ecsv")
    config = work / "bench.yaml"
    config.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))

    from dream_hpc.catalog import synth as catalog_synth
    from dream_hpc.plan import pointings
    from dream_hpc.stages import preflight

    cfg = preflight.load_offline(config)  # offline before crds/jwst/mirage are imported
    units = pointings.make_plan(cfg)
    if not (work / "catalog.ecsv").is_file():
        catalog_synth.write_table(catalog_synth.synthesize(cfg, units), work / "catalog.ecsv", cfg)
    cfg = preflight.load_offline(config)
    units = units[:args.warmup + args.units]

    # as a worker: INFO records to the unit log, pysiaf quiet, jwst and Mirage imported up front
    log_path = work / "units.log"
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s - %(name)s - %(levelname)s - %(message)s")
    logging.getLogger("pysiaf").setLevel(logging.ERROR)
    for module in ("jwst.pipeline", "mirage.imaging_simulator", "dream_hpc.stages.simulate", "dream_hpc.stages.calibrate"):
        importlib.import_module(module)

    from dream_hpc.core.rundir import RunDir
    from dream_hpc.core.workunit import STAGES
    from dream_hpc.engine.worker import output_to
    from dream_hpc.stages.chain import run_stage
    from dream_hpc.stages.contract import StageContext

    shutil.rmtree(work / "run", ignore_errors=True)
    run = RunDir.create(work / "run")
    meter = Meter()
    install(meter)
    ctx = StageContext(cfg=cfg, run=run, emit=meter.emit)
    # (group, stage) -> [wall, in steps, cpu, cpu in steps]; (group, stage) -> label -> seconds
    totals: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0] * 4)
    where: dict[tuple[str, str], dict[str, float]] = defaultdict(lambda: defaultdict(float))
    rows = []
    for i, unit in enumerate(units):
        group = "warm-up" if i < args.warmup else "measured"
        for stage in STAGES:
            meter.reset()
            with output_to(log_path):  # as a worker does for a unit
                t0, c0 = time.perf_counter(), time.process_time()
                run_stage(stage, unit, ctx)
                wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            for k, v in enumerate((wall, meter.step_s, cpu, meter.step_cpu)):
                totals[group, stage][k] += v
            for label, s in meter.labels.items():
                where[group, stage][label] += s
            rows.append((unit.unit_id, stage, wall, meter.step_s))

    print(f"{len(units)} units of {Path(args.config).name} ({units[0].aperture}, {units[0].readpatt} x"
          f"{units[0].ngroups}), one process; outside = inside the stage, outside its steps")
    for unit_id, stage, wall, step in rows:
        print(f"  {unit_id} {stage:9s} wall {wall:6.2f} s  steps {step:6.2f} s  outside {wall - step:5.2f} s "
              f"({100 * (wall - step) / wall:4.1f}%)")
    for group, n in (("warm-up", args.warmup), ("measured", args.units)):
        if not n:
            continue
        print(f"{group} ({n} units): per stage, seconds per unit (cpu: this process's CPU time, steadier "
              "than wall on a busy machine)")
        every = [0.0] * 4
        for stage in (*STAGES, "all"):
            if stage == "all":
                wall, step, cpu, step_cpu = every
            else:
                wall, step, cpu, step_cpu = totals[group, stage]
                every = [a + b for a, b in zip(every, totals[group, stage], strict=True)]
            out = wall - step
            print(f"  {stage:9s} wall {wall / n:6.3f}  steps {step / n:6.3f}  outside {out / n:6.3f} "
                  f"({100 * out / wall:4.1f}%)   cpu {cpu / n:6.3f}  outside {(cpu - step_cpu) / n:6.3f} "
                  f"({100 * (cpu - step_cpu) / cpu:4.1f}%)")
            if stage == "all":
                continue
            labelled = sum(where[group, stage].values())
            parts = sorted(where[group, stage].items(), key=lambda kv: -kv[1])
            parts.append(("other", out - labelled))
            print("      " + ", ".join(f"{label} {s / n:.3f}" for label, s in parts if abs(s) / n >= 0.0005))
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
