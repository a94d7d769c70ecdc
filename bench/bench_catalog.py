"""Benchmark the per-exposure catalog selection on a 1-million-row catalog: KD-tree vs testing every row.

A DREaM-like density (1e6 sources over ~0.6 deg^2 around COSMOS) and units taken from
config/cosmos-web.yaml (full-frame SW and LW detectors). Printed: the one-off costs (building the
tree), time per exposure for `select_for_unit` and for the brute-force reference (same predicate,
every row), their ratio, and that both return the same rows.

    python bench/bench_catalog.py [--rows 1000000] [--units 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from dream_hpc.catalog import reader  # noqa: E402 (after the path insert)
from dream_hpc.catalog.selection import select_brute_force, select_for_unit  # noqa: E402
from dream_hpc.config import load_config  # noqa: E402
from dream_hpc.plan import footprint, pointings  # noqa: E402


def random_catalog(n: int, ra0: float, dec0: float, half_width_deg: float, seed: int = 1) -> reader.Catalog:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-half_width_deg, half_width_deg, (2, n)) * 3600.0
    ra, dec = footprint.from_tangent(x, y, ra0, dec0)
    f32 = np.float32
    s = reader.Sources(row=np.arange(n), id=np.arange(1, n + 1), ra=ra, dec=dec, redshift=rng.uniform(0, 6, n).astype(f32),
                        sersic=np.ones(n, f32), radius=rng.uniform(0.02, 0.8, n).astype(f32),
                        axis_ratio=np.ones(n, f32), pa=np.zeros(n, f32), is_star=rng.uniform(size=n) < 0.01,
                        mags={"F150W": rng.uniform(18, 29, n).astype(f32)})
    return reader.Catalog(path=Path("synthetic"), sources=s, report=reader.RowReport(path="synthetic", n_rows=n))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--units", type=int, default=40, help="exposures to time (spread over the survey)")
    args = ap.parse_args()

    cfg = load_config(ROOT / "config" / "cosmos-web.yaml")
    units = pointings.make_plan(cfg)
    units = units[:: max(1, len(units) // args.units)][: args.units]
    cat = random_catalog(args.rows, cfg.pointings.center_ra, cfg.pointings.center_dec, 0.39)

    t0 = time.perf_counter()
    _ = cat.tree
    t_tree = time.perf_counter() - t0
    select_for_unit(cat, units[0], cfg.catalog.margin_arcsec)  # warm the aperture caches

    t0 = time.perf_counter()
    fast = [select_for_unit(cat, u, cfg.catalog.margin_arcsec) for u in units]
    t_fast = (time.perf_counter() - t0) / len(units)
    n_slow = min(len(units), 8)  # brute force is slow: time a few
    t0 = time.perf_counter()
    slow = [select_brute_force(cat, u, cfg.catalog.margin_arcsec) for u in units[:n_slow]]
    t_slow = (time.perf_counter() - t0) / n_slow
    same = all(np.array_equal(a.row, b.row) for a, b in zip(fast, slow, strict=False))

    per_unit = np.array([len(s) for s in fast])
    print(f"catalog: {args.rows:,} rows over {(2 * 0.39) ** 2:.2f} deg^2; {len(units)} full-frame units of cosmos-web.yaml")
    print(f"KD-tree build (once per process): {t_tree:.2f} s")
    print(f"select_for_unit:     {t_fast * 1e3:8.1f} ms per exposure ({per_unit.mean():,.0f} sources each on average)")
    print(f"brute force (ref.):  {t_slow * 1e3:8.1f} ms per exposure")
    print(f"ratio brute/KD-tree: {t_slow / t_fast:8.1f}x; identical selections: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
