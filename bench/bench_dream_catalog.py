"""The DREaM catalog at COSMOS-Web scale: prepare once, read little, against holding it whole per rank.

Writes (in chunks, so this script's own memory stays bounded) a DREaM-layout pair of FITS tables
with N rows (default 1.6e7: the COSMOS-Web area at DREaM's density) on (0, 0) over 0.75 x 0.75 deg,
then measures, each in a fresh subprocess (peak RSS is per process):

- `prepare`: `dream-hpc catalog prepare` on config/cosmos-web.yaml (time, peak RSS);
- `lookup`: what a rank does per unit with the prepared file (open it, read the rows near the unit
  through the index, cut them to the detector): time per unit and the rank's peak RSS above its
  baseline after imports;
- `whole`: today's path, every rank loading the whole catalog (`reader.load_catalog`) and selecting
  through the KD-tree: load time, per-unit time, peak RSS above the same baseline;
- `check`: `dream-hpc catalog check` on the cosmos-web plan (12,160 units), warm (prepared file
  reused) and cold (prepared again);
- `plan --out`: the footprint figure from a subsample of the prepared catalog in the user cache,
  cold (prepares it) and warm (reuses it), against the `whole` load it did before;

and prints the ratios whole / prepared. Nothing here is a timed test.

    python bench/bench_dream_catalog.py [--rows 16000000] [--units 300] [--keep DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

MAIN_COLS = [("RA", ">f8"), ("Dec", ">f8"), ("redshift", ">f4"), ("R_eff", ">f4"), ("q", ">f4"), ("n_s", ">f4"),
             ("PA", ">f4"), ("M_halo", ">f4"), ("M_gal", ">f4"), ("logpsi", ">f4")]
BANDS = ["F070W", "F090W", "F115W", "F150W", "F200W", "F277W", "F356W", "F444W",
         "F140M", "F162M", "F182M", "F210M"]
PHOT_COLS = [(f"JWST_nircam_{b}", ">f4") for b in BANDS]
HALF_WIDTH_DEG = 0.375
CHUNK = 1_000_000


# --- writing a big FITS table in chunks ------------------------------------------------------
def write_fits_chunked(path: Path, cols: list[tuple[str, str]], n: int, fill) -> None:
    """A binary table of n rows written chunk by chunk: header from astropy, rows as raw big-endian records."""
    from astropy.io import fits

    dtype = np.dtype(cols)
    small = fits.BinTableHDU.from_columns(np.zeros(1, dtype=dtype))
    header = small.header
    header["NAXIS2"] = n
    with open(path, "wb") as f:
        f.write(fits.PrimaryHDU().header.tostring().encode())
        f.write(header.tostring().encode())
        written = 0
        for start in range(0, n, CHUNK):
            rows = min(CHUNK, n - start)
            rec = np.empty(rows, dtype=dtype)
            fill(rec, start, rows)
            f.write(rec.tobytes())
            written += rec.nbytes
        pad = (-written) % 2880
        f.write(b"\0" * pad)


def make_pair(d: Path, n: int, seed: int = 1) -> tuple[Path, Path]:
    def fill_main(rec: np.ndarray, start: int, rows: int) -> None:
        rng = np.random.default_rng([seed, start])
        rec["RA"] = rng.uniform(-HALF_WIDTH_DEG, HALF_WIDTH_DEG, rows)
        rec["Dec"] = rng.uniform(-HALF_WIDTH_DEG, HALF_WIDTH_DEG, rows)
        rec["redshift"] = rng.uniform(0.2, 8.0, rows)
        rec["R_eff"] = 10 ** rng.normal(0.0, 0.3, rows)  # kpc
        rec["q"] = rng.uniform(0.1, 1.0, rows)
        rec["n_s"] = rng.uniform(0.5, 5.0, rows)
        rec["PA"] = rng.uniform(0, np.pi, rows)
        for c in ("M_halo", "M_gal", "logpsi"):
            rec[c] = rng.normal(10, 1, rows)

    def fill_phot(rec: np.ndarray, start: int, rows: int) -> None:
        rng = np.random.default_rng([seed + 1, start])
        base = rng.uniform(20.0, 29.5, rows)  # worst case for memory: most rows pass mag_limit 29
        for name, _ in PHOT_COLS:
            rec[name] = base + rng.normal(0, 0.3, rows)

    main, phot = d / "DREaM_main.fits", d / "DREaM_photometry.fits"
    write_fits_chunked(main, MAIN_COLS, n, fill_main)
    write_fits_chunked(phot, PHOT_COLS, n, fill_phot)
    return main, phot


# --- the measurements (each in its own process) ----------------------------------------------
def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    return 0.0


def reset_peak() -> None:
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def sample_units(cfg, k: int):
    from dream_hpc.plan import pointings

    units = pointings.make_plan(cfg)
    rng = np.random.default_rng(0)
    return units, [units[i] for i in sorted(rng.choice(len(units), size=min(k, len(units)), replace=False))]


def child(mode: str, config: str, prepared_path: str, k: int) -> dict:
    from dream_hpc.catalog import prepared, reader
    from dream_hpc.catalog.selection import select_for_unit
    from dream_hpc.config import load_config

    cfg = load_config(config)
    units, chosen = sample_units(cfg, k)
    import healpy  # noqa: F401  (imports are not the catalog's memory)
    import scipy.spatial  # noqa: F401

    base = rss_mb()
    reset_peak()
    out: dict = {"mode": mode, "baseline_rss_mb": base}
    t0 = time.perf_counter()
    c0 = time.process_time()
    if mode == "prepare":
        res = prepared.prepare(cfg, units, Path(prepared_path))
        out.update(seconds=time.perf_counter() - t0, rows=res.n_rows, source_rows=res.report.n_rows)
    elif mode == "lookup":
        cat = prepared.open_prepared(Path(prepared_path))
        out["open_s"] = time.perf_counter() - t0
        times, n_read, n_sel = [], [], []
        c1 = time.process_time()
        for u in chosen:
            t = time.perf_counter()
            near = cat.near_unit(u, cfg.catalog.margin_arcsec)
            sel = select_for_unit(near, u, cfg.catalog.margin_arcsec)
            times.append(time.perf_counter() - t)
            n_read.append(len(near.sources))
            n_sel.append(len(sel))
        out["per_unit_cpu_s"] = (time.process_time() - c1) / len(chosen)
        out.update(per_unit_s=float(np.mean(times)), per_unit_max_s=float(np.max(times)),
                   rows_read_mean=float(np.mean(n_read)), rows_read_max=int(np.max(n_read)),
                   rows_selected_mean=float(np.mean(n_sel)), checksum=int(np.sum(n_sel)))
    else:  # whole: today's path
        cat = reader.load_catalog(cfg)
        out["load_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        _ = cat.tree
        out["tree_s"] = time.perf_counter() - t1
        times, n_sel = [], []
        out["load_cpu_s"] = time.process_time() - c0
        c1 = time.process_time()
        for u in chosen:
            t = time.perf_counter()
            sel = select_for_unit(cat, u, cfg.catalog.margin_arcsec)
            times.append(time.perf_counter() - t)
            n_sel.append(len(sel))
        out["per_unit_cpu_s"] = (time.process_time() - c1) / len(chosen)
        out.update(per_unit_s=float(np.mean(times)), rows_selected_mean=float(np.mean(n_sel)),
                   checksum=int(np.sum(n_sel)))
    out["cpu_s"] = time.process_time() - c0
    out["peak_rss_mb"] = peak_mb()
    out["catalog_peak_mb"] = out["peak_rss_mb"] - base
    return out


def run_child(mode: str, config: Path, prepared_path: Path, k: int, env: dict) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", mode, "--config", str(config),
                           "--prepared", str(prepared_path), "--units", str(k)],
                          capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def timed_cli(args: list[str], env: dict) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB, from wait4) of one `dream-hpc` command (CPU seconds printed too:
    on a shared machine the wall time includes waiting for a core)."""
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "dream_hpc", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, env=env, cwd=ROOT)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    out = p.stdout.read() if p.stdout else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"dream-hpc {' '.join(args)} failed:\n{p.stderr.read() if p.stderr else ''}")
    print(f"    [{' '.join(args[:2])}: {usage.ru_utime + usage.ru_stime:.1f} s CPU, {wall:.1f} s wall, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores]")
    return wall, usage.ru_maxrss / 1024.0, out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=16_000_000)
    ap.add_argument("--units", type=int, default=300, help="units sampled for the per-unit timings")
    ap.add_argument("--keep", default="", help="directory for the catalog (kept; reused if present)")
    ap.add_argument("--child", default="")
    ap.add_argument("--config", default="")
    ap.add_argument("--prepared", default="")
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.config, args.prepared, args.units)))
        return 0

    d = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-dream-"))
    d.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DREAM_HPC_CACHE_DIR": str(d / "cache")}
    try:
        main_path, phot_path = d / "DREaM_main.fits", d / "DREaM_photometry.fits"
        t0 = time.perf_counter()
        if not (main_path.is_file() and phot_path.is_file()):
            make_pair(d, args.rows)
        print(f"catalog: {args.rows:,} rows, {(main_path.stat().st_size + phot_path.stat().st_size) / 1e9:.2f} GB "
              f"({time.perf_counter() - t0:.0f} s to write)")
        cfg = yaml.safe_load((ROOT / "config" / "cosmos-web.yaml").read_text())
        cfg["catalog"].update(path=str(main_path), photometry=str(phot_path))
        cfg["references"] = {**cfg.get("references", {}), "crds_path": str(d / "crds"), "mirage_data": str(d / "md")}
        config = d / "cosmos-web.yaml"
        config.write_text(yaml.safe_dump(cfg, sort_keys=False))
        prep = d / "prepared.h5"
        prep.unlink(missing_ok=True)

        wall, peak, _ = timed_cli(["catalog", "prepare", str(config), "--out", str(prep)], env)
        print(f"catalog prepare:   {wall:7.1f} s, peak RSS {peak:7.0f} MB, {prep.stat().st_size / 1e9:.2f} GB file")
        lookup = run_child("lookup", config, prep, args.units, env)
        whole = run_child("whole", config, prep, args.units, env)
        assert lookup["checksum"] == whole["checksum"], "prepared and whole-catalog selections differ"
        print(f"per unit, prepared: {lookup['per_unit_s'] * 1e3:7.1f} ms (max {lookup['per_unit_max_s'] * 1e3:.0f} ms), "
              f"{lookup['rows_read_mean']:,.0f} rows read (max {lookup['rows_read_max']:,}), "
              f"rank catalog memory {lookup['catalog_peak_mb']:.0f} MB (open {lookup['open_s'] * 1e3:.0f} ms; "
              f"{lookup['per_unit_cpu_s'] * 1e3:.1f} ms CPU per unit)")
        print(f"per unit, whole:    {whole['per_unit_s'] * 1e3:7.1f} ms after a {whole['load_s']:.1f} s load "
              f"+ {whole['tree_s']:.1f} s KD-tree, rank catalog memory {whole['catalog_peak_mb']:.0f} MB "
              f"({whole['load_cpu_s']:.1f} s CPU to load + tree, {whole['per_unit_cpu_s'] * 1e3:.1f} ms CPU per unit)")
        print(f"ratios whole/prepared (CPU): memory {whole['catalog_peak_mb'] / max(lookup['catalog_peak_mb'], 1):.0f}x, "
              f"first unit {(whole['load_cpu_s'] + whole['per_unit_cpu_s']) / (lookup['per_unit_cpu_s'] + 0.05):.0f}x, "
              f"per unit {whole['per_unit_cpu_s'] / lookup['per_unit_cpu_s']:.2f}x")
        wall_w, peak_w, out = timed_cli(["catalog", "check", str(config), "--prepared", str(prep)], env)
        print(f"catalog check (prepared file reused): {wall_w:6.1f} s, peak RSS {peak_w:.0f} MB")
        prep.unlink()
        wall_c, peak_c, out = timed_cli(["catalog", "check", str(config), "--prepared", str(prep)], env)
        print(f"catalog check (cold, prepares):       {wall_c:6.1f} s, peak RSS {peak_c:.0f} MB")
        print("  " + "\n  ".join(out.strip().splitlines()))
        # plan --out's footprint figure: before, the whole catalog in memory (the `whole` load above);
        # now a bounded subsample of the prepared catalog in the user cache (prepared there once)
        run_dir = d / "plan-run"
        shutil.rmtree(d / "cache", ignore_errors=True)
        for state in ("cold, prepares into the cache", "warm, cached prepared catalog reused"):
            shutil.rmtree(run_dir, ignore_errors=True)
            wall_p, peak_p, _ = timed_cli(["plan", str(config), "--out", str(run_dir)], env)
            print(f"plan --out ({state}): {wall_p:6.1f} s, peak RSS {peak_p:.0f} MB")
        print(f"  (before: plan --out loaded the whole catalog: {whole['load_s']:.1f} s wall, "
              f"{whole['catalog_peak_mb']:.0f} MB above the imports, before drawing)")
    finally:
        if not args.keep:
            shutil.rmtree(d, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
