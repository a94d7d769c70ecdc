"""Benchmark the run report on a synthetic survey-sized journal: page size and render time.

A journal of N units (default 12,000, on R ranks) is fabricated with the engine's own writer
(core.journal.JournalWriter) in a child process (so the run reads as finished: its writer is gone),
with the records a real run writes per unit: unit_start, a start/done step record per Mirage phase
and jwst step (26 steps), stage_done for simulate/detector1/image2 with realistic params, refs,
checksums and step times, unit_done; 1% of units fail in a jwst step and 0.2% time out, each with a
log; one mosaic per filter; plan.json with every unit. Figures come from a real run when one is given
(--figures-from, e.g. the demo's runs/demo, with its summary.json's science entries), so the page
carries real-sized images.

Printed: journal size, the time of `read_run` (what `dream-hpc status` does: the baseline, measured
in the same run) and of the whole report (read model + timeline + figures + template), their ratio,
and the page's size; with --provenance also consolidation and the record audit the report includes.

    python bench/bench_report.py [--units 12000] [--ranks 250] [--work DIR] [--figures-from RUN]
                                 [--provenance]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

FILTERS = (("F090W", "NRCB1"), ("F150W", "NRCB2"), ("F277W", "NRCB5"), ("F444W", "NRCB5"))
STEPS = {
    "simulate": ["seed", "dark_prep", "obs_generator"],
    "detector1": ["read", "group_scale", "dq_init", "saturation", "ipc", "superbias", "refpix", "linearity",
                  "persistence", "dark_current", "charge_migration", "jump", "clean_flicker_noise", "ramp_fit",
                  "gain_scale", "picture_frame", "save"],
    "image2": ["read", "assign_wcs", "flat_field", "photom", "resample", "save"],
}
REFS = {
    "simulate": ["area", "distortion", "gain", "linearity", "saturation", "superbias", "photom",
                 "mirage_psfpath", "mirage_linearized_darkfile", "mirage_pixelflat"],
    "detector1": ["dark", "gain", "linearity", "mask", "readnoise", "saturation", "superbias"],
    "image2": ["area", "dark", "distortion", "flat", "gain", "linearity", "mask", "photom", "readnoise",
               "saturation", "superbias"],
}


def _sha(rng: random.Random) -> str:
    return f"{rng.getrandbits(256):064x}"


def unit_ids(n: int) -> list[tuple[str, str, str]]:
    """(unit id, filter, detector) for n units: visits of 4 detectors/filters."""
    out = []
    for i in range(n):
        filt, det = FILTERS[i % len(FILTERS)]
        visit, exp = 1 + i // 400, 1 + (i // len(FILTERS)) % 100
        out.append((f"jw09999001{visit:03d}_01101_{exp:05d}_{det.lower()}_{i:05d}", filt, det))
    return out


def write_plan(run: Path, units: list[tuple[str, str, str]]) -> None:
    rng = random.Random(1)
    docs = [{"unit_id": uid, "filter": f, "detector": d, "seeds": {"poisson": rng.getrandbits(32),
                                                                   "cosmic_ray": rng.getrandbits(32)},
             "est_cpu_s": 60.0, "est_mem_mb": 2400.0} for uid, f, d in units]
    summary = {"survey": "bench-12k", "units": len(units), "exposures": len(units) // 4, "visits": len(units) // 400,
               "filters": sorted({f for _, f, _ in units}), "detectors": sorted({d for _, _, d in units}),
               "subarray": ["FULL"], "pixels": len(units) * 2048 * 2048,
               "pixel_reads": len(units) * 2048 * 2048 * 8,
               "cpu_hours": {"simulate": 120.0, "detector1": 50.0, "image2": 30.0, "total": 200.0},
               "peak_mem_mb": {"simulate": 2400, "detector1": 6000, "image2": 3000}, "unit_peak_mem_mb": 6000,
               "image3": {}, "image3_cpu_hours": 20.0, "footprint_arcmin2": {"SHORT": 400.0, "LONG": 420.0},
               "node": {"mem_gb": 256.0, "cores": 64, "ranks_per_node": 42, "node_hours": 4.76},
               "first_exposure": "2025-01-01T00:00:00", "last_exposure": "2025-01-20T00:00:00"}
    (run / "plan.json").write_text(json.dumps({"summary": summary, "units": docs}))


def fabricate(run: Path, n_units: int, n_ranks: int) -> None:
    """The journal of a finished n_units survey on n_ranks ranks (runs in a child process)."""
    from dream_hpc.core.journal import JournalWriter

    rng = random.Random(12000)
    units = unit_ids(n_units)
    write_plan(run, units)
    (run / "logs").mkdir(exist_ok=True)
    ref_names = {t: [f"crds://jwst_nircam_{t}_{k:04d}.fits" for k in range(1, 5)] for s in REFS for t in REFS[s]}
    params = {s: {f"{st}.param_{k}": (k * 0.5 if k % 2 else f"value{k}") for st in STEPS[s][:7] for k in range(2)}
              for s in STEPS}
    t_base = 1_750_000_000.0
    now = [""]
    # A fabricated record need not survive a power cut (no fsync), and carries the simulated time.
    with mock.patch("os.fsync", lambda fd: None), mock.patch("dream_hpc.core.journal.now_iso", lambda: now[0]):
        writers = [JournalWriter(run / "journal", r) for r in range(n_ranks)]
        clock = [t_base] * n_ranks

        def stamp(rank: int, dt_s: float) -> str:
            import datetime as dt

            clock[rank] += dt_s
            return dt.datetime.fromtimestamp(clock[rank], dt.UTC).isoformat(timespec="milliseconds")

        def write(rank: int, when: str, kind: str, unit: str | None, **data) -> None:
            now[0] = when
            writers[rank].write(kind, unit, **data)

        write(0, stamp(0, 0), "run_start", None, attempt=1, launcher="srun", mpi_size=n_ranks,
              hosts=[f"node{i:03d}" for i in range(max(1, n_ranks // 42))], n_units=n_units,
              config_sha256="0" * 64, packages={"jwst": "3.0.0"}, versions={"jwst": "3.0.0"},
              lock_text="jwst==3.0.0 \\\n", crds={"context": "jwst_0001.pmap"}, dream_hpc={"version": "bench"})
        for i, (uid, filt, det) in enumerate(units):
            rank = i % n_ranks
            fate = rng.random()
            stages = list(STEPS)
            write(rank, stamp(rank, 0.2), "unit_start", uid, stage="simulate", stages=stages,
                  log=f"logs/{uid}.log", limit_s=3600.0)
            for stage in stages:
                start = stamp(rank, 0.0)
                times = {}
                fail_here = (fate < 0.012 and stage == "image2") or (0.012 <= fate < 0.014 and stage == "detector1")
                for step in STEPS[stage]:
                    write(rank, stamp(rank, 0.01), "step", uid, stage=stage, step=step, status="start")
                    if fail_here and step == ("photom" if fate < 0.012 else "jump"):
                        break
                    d = rng.lognormvariate(0.0, 0.6) * (20.0 if stage == "simulate" else 2.0)
                    times[step] = d
                    write(rank, stamp(rank, d), "step", uid, stage=stage, step=step, status="done")
                if fail_here and fate < 0.012:
                    write(rank, stamp(rank, 0.1), "unit_failed", uid, stage=stage, step="photom",
                          error=f"ValueError: synthetic failure {i} in photom: no matching row in the photom reference")
                    (run / "logs" / f"{uid}.log").write_text("".join(f"log line {k} of {uid}\n" for k in range(200))
                                                             + "Traceback (most recent call last):\nValueError: synthetic\n")
                    break
                if fail_here:
                    write(rank, stamp(rank, 3600.0), "unit_timeout", uid, stage=stage, step="jump", limit_s=3600.0)
                    (run / "logs" / f"{uid}.log").write_text(f"jump started for {uid}\n")
                    break
                write(rank, stamp(rank, 0.05), "stage_done", uid, stage=stage,
                      inputs={f"exposures/{uid}_in_{stage}.fits": _sha(rng)},
                      outputs={f"exposures/{uid}_{stage}.fits": _sha(rng)},
                      refs={t: rng.choice(ref_names[t]) for t in REFS[stage]} | {"crds_context": "jwst_0001.pmap"},
                      ref_sha256={rng.choice(ref_names[t]): _sha(rng) for t in REFS[stage]}, params=params[stage],
                      seeds={"poisson": 1, "cosmic_ray": 2} if stage == "simulate" else {}, step_times=times,
                      extra={"filter": filt, "detector": det}, wall_s=sum(times.values()) + 0.3,
                      cpu_s=sum(times.values()) * 0.95, peak_rss_mb=rng.gauss(2400 if stage == "simulate" else 900, 80),
                      start=start)
            else:
                write(rank, stamp(rank, 0.05), "unit_done", uid, outputs={f"exposures/{uid}_cal.fits": _sha(rng)},
                      wall_s=100.0, peak_rss_mb=2400.0, cpu_s=95.0)
        end = max(clock)
        for k, (filt, _) in enumerate(FILTERS):
            t0 = stamp(0, end - clock[0] + 1.0)
            write(0, t0, "mosaic_start", None, filter=filt, log=f"logs/mosaic_{filt}.log", units=[])
            write(0, stamp(0, 1800.0), "mosaic_done", None, filter=filt, asn=f"mosaic/{filt.lower()}_asn.json",
                  inputs={}, outputs={f"mosaic/{filt.lower()}_i2d.fits": _sha(rng)}, refs={}, ref_sha256={},
                  params={}, seeds={}, step_times={"resample": 1500.0}, wall_s=1800.0, cpu_s=1790.0,
                  peak_rss_mb=60000.0, extra={"n_inputs": n_units // 4, "preview": f"figures/mosaic_{filt.lower()}.png",
                                              "wall_s": 1800.0, "k": k})
        write(0, stamp(0, 1.0), "run_end", None, status="failed", n_done=0, n_failed=0)
        for w in writers:
            w.close()


def copy_figures(src: Path | None, run: Path) -> None:
    figures = run / "figures"
    figures.mkdir(exist_ok=True)
    if src is None or not (src / "figures").is_dir():
        return
    pngs = sorted((src / "figures").glob("*.png"))
    for p in pngs:
        if p.name.startswith(("footprint", "timeline")):
            shutil.copy(p, figures / p.name)
    previews = [p for p in pngs if p.name.startswith("mosaic_")]
    sciences = [p for p in pngs if p.name.startswith("science_")]
    for k, (filt, _) in enumerate(FILTERS):  # the real previews, reused for each filter
        if previews:
            shutil.copy(previews[k % len(previews)], figures / f"mosaic_{filt.lower()}.png")
        if sciences:
            shutil.copy(sciences[k % len(sciences)], figures / f"science_{filt.lower()}.png")
    try:  # the real run's science entries (with its completeness curve), reused the same way
        entries = [e for e in json.loads((src / "summary.json").read_text())["mosaics"].values() if "science" in e]
    except (OSError, ValueError, KeyError):
        entries = []
    if entries:
        mosaics = {filt: entries[k % len(entries)] | {"preview": f"figures/mosaic_{filt.lower()}.png",
                                                       "science_figure": f"figures/science_{filt.lower()}.png"}
                   for k, (filt, _) in enumerate(FILTERS)}
        (run / "summary.json").write_text(json.dumps({"mosaics": mosaics, "wall_s": 12000.0}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--units", type=int, default=12000)
    ap.add_argument("--ranks", type=int, default=250)
    ap.add_argument("--work", help="directory for the synthetic run (default: a temporary one, removed)")
    ap.add_argument("--figures-from", default=str(ROOT / "runs" / "demo"),
                    help="a real run whose figures to reuse (default runs/demo, if it exists)")
    ap.add_argument("--provenance", action="store_true", help="also consolidate provenance.h5 (audited in the page)")
    args = ap.parse_args()

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="bench-report-"))
    run = work / "run"
    if run.exists():
        shutil.rmtree(run)
    run.mkdir(parents=True)
    t0 = time.perf_counter()
    child = mp.get_context("spawn").Process(target=fabricate, args=(run, args.units, args.ranks))
    child.start()
    child.join()
    if child.exitcode:
        print(f"fabrication failed (exit {child.exitcode})", file=sys.stderr)
        return 1
    fab_s = time.perf_counter() - t0
    src = Path(args.figures_from) if args.figures_from else None
    copy_figures(src if src and src.is_dir() else None, run)
    journal_mb = sum(p.stat().st_size for p in (run / "journal").glob("*.jsonl")) / 1e6
    n_records = sum(p.read_bytes().count(b"\n") for p in (run / "journal").glob("*.jsonl"))

    from dream_hpc.core.rundir import RunDir
    from dream_hpc.core.runstate import read_run
    from dream_hpc.drivers import report

    rd = RunDir(run.resolve())
    prov_s = None
    if args.provenance:
        from dream_hpc.provenance.write import consolidate

        t = time.perf_counter()
        consolidate(rd)
        prov_s = time.perf_counter() - t
    t = time.perf_counter()
    view = read_run(rd)
    base_s = time.perf_counter() - t
    t = time.perf_counter()
    ctx = report.build_context(rd)
    ctx_s = time.perf_counter() - t
    t = time.perf_counter()
    html = report.render(ctx)
    render_s = time.perf_counter() - t
    page = run / report.FILENAME
    page.write_text(html)
    size_mb = page.stat().st_size / 1e6
    n_img = html.count("<img ")
    print(f"synthetic run: {len(view.units):,} units on {args.ranks} ranks, {n_records:,} journal records "
          f"({journal_mb:.0f} MB), fabricated in {fab_s:.0f} s" + (f"; provenance.h5 in {prov_s:.1f} s" if prov_s else ""))
    print(f"read_run (the status view, baseline): {base_s:6.2f} s")
    print(f"report context (read model, timeline, figures{', audit' if prov_s else ''}): {ctx_s:6.2f} s "
          f"= {ctx_s / base_s:.1f} x read_run")
    print(f"template render: {render_s:6.2f} s; page {size_mb:.2f} MB, {n_img} images, "
          f"{ctx['failures']['n']} failures ({len(ctx['failures']['rows'])} rows shown, "
          f"{len(ctx['failures']['logs'])} log excerpts), {len(ctx['run']['slowest'])} slowest units")
    print(f"page: {page}")
    if not args.work:
        shutil.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
