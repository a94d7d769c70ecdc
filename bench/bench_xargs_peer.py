"""dream-hpc against what a cluster user runs without it: `strun` per file under `xargs -P N`.

The peer is the CEERS-style recipe (e.g. `xargs -n1 -P24 strun STAGE1_params ...`): Detector1 on every
`_uncal` file N at a time, then Image2 on every `_rate` the same way, then one `strun calwebb_image3`
per filter on its association (the filters' Image3 also N at a time). Both sides start from the same
`_uncal` files, simulated once by dream-hpc (Mirage is not what is compared), and use the same step
parameters: CRDS `pars-*` references of the pinned context, then the config's `pipeline.*` overrides
(dream-hpc's `build_pipeline` merges them the way `strun` does; the same local abs_refcat for Image3).

Per repeat, interleaved (dream-hpc, peer, peer, dream-hpc, ...) so that drift in the machine's load
falls on both sides alike:
  dream-hpc: the simulated run directory copied without its `_rate`, `_cal` and mosaic products, then
             `mpiexec -n N dream-hpc run` resumes it (Detector1, Image2, Image3, plus its checks,
             checksums and provenance);
  peer:      the same `_uncal` files linked into a fresh directory, then xargs/strun as above.
Printed: wall, CPU (user+sys of all processes) and peak memory (summed RSS of all processes, sampled)
of each side, the ratios dream-hpc/peer (< 1: dream-hpc is better), `uptime` load before and after
each run, and whether the science arrays (SCI/ERR/DQ of every `_rate`, `_cal`, `_i2d`) agree:
bit-identical, or within jwst's regression-test tolerance (fitsdiff rtol=1e-5, atol=1e-7), or not.

    python bench/bench_xargs_peer.py [--config config/demo.yaml] [--ranks 2] [--repeats 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import resource
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent
# jwst's regression tests compare products with fitsdiff at these tolerances (jwst/regtest)
RTOL, ATOL = 1e-5, 1e-7


def _bench_engine() -> Any:
    """bench/bench_engine.py's helpers (config preparation, launching dream-hpc, the clean env)."""
    spec = importlib.util.spec_from_file_location("bench_engine", HERE / "bench_engine.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


ENGINE = _bench_engine()


def load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


# --- measuring a run: wall, CPU of every descendant, peak summed RSS ------------------------------
class TreeMemory:
    """Samples the summed RSS of this process's descendants (every rank, worker and strun at once)."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self._me = psutil.Process()
        self.interval, self.peak = interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import psutil

        while not self._stop.is_set():
            total = 0
            for p in self._me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # ended between listing and reading
                    total += p.memory_info().rss
            self.peak = max(self.peak, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measured(fn: Callable[[], None]) -> dict[str, Any]:
    """Run `fn` (which waits for its subprocesses); its wall, CPU and peak memory, and the load around it."""
    load0 = load_avg()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with TreeMemory() as mem:
        t0 = time.perf_counter()
        fn()
        wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_gb": mem.peak / 2**30, "load_before": load0,
            "load_after": load_avg()}


# --- shared input -------------------------------------------------------------------------------
def prepare(config: Path, kit: Path, work: Path) -> Path:
    """bench_engine.prepare, with the photometry table (if the config has one) kept inside `work`."""
    cfg = yaml.safe_load(config.read_text())
    if cfg.get("catalog", {}).get("photometry"):
        cfg["catalog"]["photometry"] = str(work / "photometry.fits")
    source = work / "source.yaml"
    source.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return ENGINE.prepare(source, kit, work)


def units_of(config: Path) -> list[Any]:
    from dream_hpc.config import load_config
    from dream_hpc.plan.pointings import make_plan

    return make_plan(load_config(config))


def derived_run(sim: Path, dest: Path) -> None:
    """`sim` without the products both sides compute: a dream-hpc run that resumes at Detector1."""
    shutil.rmtree(dest, ignore_errors=True)

    def copy(src: str, dst: str) -> None:
        if src.endswith("_uncal.fits"):
            os.link(src, dst)  # read-only input of both sides; never rewritten in place
        else:
            shutil.copy2(src, dst)

    shutil.copytree(sim, dest, copy_function=copy,
                    ignore=shutil.ignore_patterns("*_rate.fits", "*_cal.fits", "mosaic"))


# --- the peer -------------------------------------------------------------------------------------
def peer_env(config: Path) -> dict[str, str]:
    from dream_hpc.config import load_config
    from dream_hpc.core import offline

    cfg = load_config(config)
    refs = cfg.references
    # the same offline CRDS cache and one thread per process, as dream-hpc's ranks run
    return {**ENGINE._env(), **offline.crds_env(cfg.resolve(refs.crds_path), refs.context),
            **{v: "1" for v in offline.THREAD_VARS}}


def xargs(files: list[str], command: list[str], ranks: int, env: dict[str, str], log: Path, cwd: Path) -> None:
    """`printf '%s\\n' FILES | xargs -P N -I{} COMMAND`: what the user's shell line does."""
    with open(log, "a") as out:
        proc = subprocess.run(["xargs", "-P", str(ranks), "-I{}", *command], input="\n".join(files) + "\n",
                              text=True, env=env, stdout=out, stderr=subprocess.STDOUT, cwd=cwd)
    if proc.returncode != 0:
        raise SystemExit(f"peer: xargs {' '.join(command[:2])} failed (exit {proc.returncode}; see {log})")


def peer_inputs(config: Path, sim: Path, dest: Path) -> None:
    """Fresh peer directory: the simulated `_uncal` files, and per filter the association and the
    local astrometric catalog a user writes before Image3 (the same refcat dream-hpc wrote)."""
    from dream_hpc.stages.image3 import association

    shutil.rmtree(dest, ignore_errors=True)
    (dest / "exposures").mkdir(parents=True)
    (dest / "mosaic").mkdir()
    units = units_of(config)
    for u in units:
        name = u.filename("uncal")
        os.link(sim / "exposures" / name, dest / "exposures" / name)
    for filt in sorted({u.filter for u in units}):
        mine = sorted((u for u in units if u.filter == filt), key=lambda u: u.unit_id)
        cals = [dest / "exposures" / u.filename("cal") for u in mine]
        stem = filt.lower()
        (dest / "mosaic" / f"{stem}_asn.json").write_text(json.dumps(association(mine, cals, dest / "mosaic")))
        shutil.copy2(sim / "mosaic" / f"{stem}_refcat.ecsv", dest / "mosaic" / f"{stem}_refcat.ecsv")


def run_peer(config: Path, dest: Path, ranks: int) -> None:
    from dream_hpc.config import load_config

    cfg = load_config(config)
    env, exp, log = peer_env(config), dest / "exposures", dest / "peer.log"
    strun = str(BIN / "strun")
    units = units_of(config)
    xargs([u.filename("uncal") for u in units],
          [strun, "calwebb_detector1", "{}", "--output_dir", str(exp), *ENGINE._step_args(cfg.pipeline.detector1)],
          ranks, env, log, exp)
    xargs([u.filename("rate") for u in units],
          [strun, "calwebb_image2", "{}", "--output_dir", str(exp), *ENGINE._step_args(cfg.pipeline.image2)],
          ranks, env, log, exp)
    # Image3 per filter, also N at a time; abs_refcat differs per filter, so one shell line each via sh -c
    lines = []
    for filt in sorted({u.filter for u in units}):
        stem = filt.lower()
        image3 = json.loads(json.dumps(cfg.pipeline.image3))
        image3.setdefault("tweakreg", {})["abs_refcat"] = str(dest / "mosaic" / f"{stem}_refcat.ecsv")
        args = " ".join(f"'{a}'" for a in ENGINE._step_args(image3))
        lines.append(f"{strun} calwebb_image3 {stem}_asn.json --output_dir {dest / 'mosaic'} {args}")
    xargs(lines, ["sh", "-c", "{}"], ranks, env, log, dest / "mosaic")


# --- comparing the science arrays -------------------------------------------------------------
def compare_arrays(a: Path, b: Path) -> tuple[str, float]:
    """('identical' | 'tolerance' | 'differ', largest |a-b| / (atol + rtol |b|)) over SCI/ERR/DQ (+WHT)."""
    from astropy.io import fits

    verdict, worst = "identical", 0.0
    with fits.open(a) as ha, fits.open(b) as hb:
        for ext in ("SCI", "ERR", "DQ", "WHT"):
            if ext not in ha and ext not in hb:
                continue
            if (ext in ha) != (ext in hb):
                return "differ", float("inf")
            x, y = ha[ext].data, hb[ext].data
            if x is None and y is None:
                continue
            if x is None or y is None or x.shape != y.shape:
                return "differ", float("inf")
            if np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                continue
            if ext == "DQ":
                return "differ", float("inf")
            xf, yf = x.astype(np.float64), y.astype(np.float64)
            both = np.isfinite(xf) & np.isfinite(yf)
            if not np.array_equal(np.isnan(xf), np.isnan(yf)):
                return "differ", float("inf")
            ratio = float(np.max(np.abs(xf[both] - yf[both]) / (ATOL + RTOL * np.abs(yf[both])), initial=0.0))
            worst = max(worst, ratio)
            verdict = "tolerance" if worst <= 1.0 else "differ"
    return verdict, worst


def compare_runs(config: Path, dream_run: Path, peer_run: Path) -> dict[str, Any]:
    from dream_hpc.stages.image3 import product_name

    units = units_of(config)
    pairs = [(dream_run / "exposures" / u.filename(s), peer_run / "exposures" / u.filename(s))
             for u in units for s in ("rate", "cal")]
    for filt in sorted({u.filter for u in units}):
        name = product_name([u for u in units if u.filter == filt])
        pairs.append((dream_run / "mosaic" / f"{name}_i2d.fits", peer_run / "mosaic" / f"{name}_i2d.fits"))
    counts = {"identical": 0, "tolerance": 0, "differ": 0}
    worst, differing = 0.0, []
    for a, b in pairs:
        verdict, ratio = compare_arrays(a, b)
        counts[verdict] += 1
        worst = max(worst, ratio if verdict != "identical" else 0.0)
        if verdict == "differ":
            differing.append(a.name)
    return {"products": len(pairs), **counts, "worst_over_tolerance": worst, "differing": differing}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default=str(ROOT / "config" / "demo.yaml"))
    ap.add_argument("--kit", default=str(ROOT / "build" / "refkit"))
    ap.add_argument("--work", default="", help="scratch directory (default /tmp/dream-hpc-peer-<config name>)")
    ap.add_argument("--ranks", type=int, default=2, help="N: dream-hpc ranks and xargs -P")
    ap.add_argument("--repeats", type=int, default=2, help="dream-hpc/peer pairs, interleaved")
    args = ap.parse_args(argv)
    name = Path(args.config).stem
    work = Path(args.work or f"/tmp/dream-hpc-peer-{name}").resolve()
    work.mkdir(parents=True, exist_ok=True)
    config = prepare(Path(args.config).resolve(), Path(args.kit).resolve(), work)
    sim = work / "sim"
    if not (sim / "mosaic").is_dir():
        shutil.rmtree(sim, ignore_errors=True)
        print(f"simulating the shared input once (dream-hpc, {args.ranks} ranks) ...", flush=True)
        sim.mkdir(parents=True)
        ENGINE.dream(config, sim, args.ranks if args.ranks > 1 else None)
    results: dict[str, list[dict[str, Any]]] = {"dream": [], "peer": []}
    for i in range(args.repeats):
        order = ("dream", "peer") if i % 2 == 0 else ("peer", "dream")
        for side in order:
            dest = work / f"{side}_{i}"
            if side == "peer":
                peer_inputs(config, sim, dest)  # not timed: the user's preparation
                fig = measured(lambda d=dest: run_peer(config, d, args.ranks))
            else:
                derived_run(sim, dest)
                fig = measured(lambda d=dest: ENGINE.dream(config, d, args.ranks if args.ranks > 1 else None))
            results[side].append(fig)
            print(f"  [{i}] {side:5s} wall {fig['wall_s']:7.1f} s  cpu {fig['cpu_s']:7.1f} s  peak "
                  f"{fig['peak_rss_gb']:5.2f} GiB  load {fig['load_before']} -> {fig['load_after']}", flush=True)
    check = compare_runs(config, work / "dream_0", work / "peer_0")
    print(f"\n== {name}: dream-hpc ({args.ranks} ranks) vs xargs -P {args.ranks} strun, {args.repeats} interleaved "
          f"repeats, {len(units_of(config))} units")
    ratios = {}
    for key, label in (("wall_s", "wall"), ("cpu_s", "CPU"), ("peak_rss_gb", "peak memory")):
        d = [r[key] for r in results["dream"]]
        p = [r[key] for r in results["peer"]]
        per = [a / b for a, b in zip(d, p, strict=True)]
        ratios[key] = per
        print(f"  {label:12s} dream-hpc {np.median(d):8.2f}  peer {np.median(p):8.2f}  ratio dream/peer "
              f"median {np.median(per):.3f} (per repeat: {', '.join(f'{r:.3f}' for r in per)})")
    how = ("bit-identical" if check["identical"] == check["products"] else
           "within jwst regression tolerance (rtol 1e-5, atol 1e-7)" if not check["differ"] else "DIFFERENT")
    print(f"  science arrays (SCI/ERR/DQ of {check['products']} _rate/_cal/_i2d): {how}; "
          f"{check['identical']} identical, {check['tolerance']} within tolerance, {check['differ']} differ "
          f"{check['differing'][:4]}")
    out = work / "peer_results.json"
    out.write_text(json.dumps({"config": str(args.config), "ranks": args.ranks, "results": results,
                               "ratios": ratios, "check": check}, indent=1))
    print(f"raw figures: {out}")
    return 0 if not check["differ"] else 1


if __name__ == "__main__":
    sys.exit(main())
