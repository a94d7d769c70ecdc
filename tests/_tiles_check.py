"""Checks of a tiled run that need jwst and CRDS set up: run as a subprocess by tests/test_tiles.py.

    python tests/_tiles_check.py CONFIG RUN SCRATCH FILTER

prints one JSON object: the tile-core vs single-mosaic pixel differences, and for every bright,
isolated input star lying in a tile overlap how many tile catalogs and merged-catalog rows hold it.
"""

from __future__ import annotations

import json
import logging
import shutil
import sys
from pathlib import Path

import numpy as np


def offline_run(config: str, run_dir: str):  # -> (SurveyConfig, RunDir)
    """The run's config and directory with jwst/CRDS pointed at its offline kit and the network forbidden."""
    from dream_hpc.config import load_config
    from dream_hpc.core import offline
    from dream_hpc.core.rundir import RunDir

    cfg = load_config(config)
    refs = cfg.references
    offline.configure(cfg.resolve(refs.crds_path), refs.context, cfg.resolve(refs.mirage_data))
    offline.forbid_network()
    return cfg, RunDir(Path(run_dir).resolve())


def main(config: str, run_dir: str, scratch: str, filt: str) -> dict:
    from astropy.table import Table
    from stdatamodels.jwst import datamodels

    from dream_hpc.catalog import reader
    from dream_hpc.core.rundir import RunDir
    from dream_hpc.plan import grid as G
    from dream_hpc.plan.footprint import chord, unit_vectors
    from dream_hpc.plan.summary import load_plan
    from dream_hpc.stages import tiles as T
    from dream_hpc.stages.contract import StageContext

    cfg, run = offline_run(config, run_dir)
    units = load_plan(run.plan)
    mine = sorted((u for u in units if u.filter == filt), key=lambda u: u.unit_id)
    grid = G.filter_tiles(cfg, units)[filt]

    # 1. one mosaic over the whole grid from the same _crf files (frozen WCSs, masks, sky levels)
    other = RunDir(Path(scratch).resolve())
    (other.root / "mosaic").mkdir(parents=True, exist_ok=True)
    shutil.copytree(run.mosaic / "outliers", other.mosaic / "outliers")
    nx, ny = grid.shape
    whole = G.Tile("all", 0, 0, 0, nx, 0, ny, 0, nx, 0, ny, grid.crpix, [u.unit_id for u in mine])
    spec_grid = G.Grid.from_dict({**grid.to_dict(), "tiles": [whole.__dict__]})
    ctx = StageContext(cfg=cfg, run=other, emit=lambda kind, **d: None, log=logging.getLogger("check"))
    res = T.run_tile({"phase": "tile", "filter": filt, "grid": spec_grid.to_dict(), "tile": "all"}, mine, ctx)
    diffs = {}
    with datamodels.open(str(other.root / res.extra["i2d"])) as single:
        single_wht = np.array(single.wht, float)
        for tile in grid.tiles:
            name = T.tile_product(mine, tile.tile_id)
            with datamodels.open(str(run.mosaic / "tiles" / f"{name}_i2d.fits")) as m:
                d = {}
                for arr in ("data", "err", "wht"):
                    a = getattr(m, arr)[tile.cy0 - tile.y0:tile.cy1 - tile.y0, tile.cx0 - tile.x0:tile.cx1 - tile.x0]
                    b = getattr(single, arr)[tile.cy0:tile.cy1, tile.cx0:tile.cx1]
                    a, b = np.asarray(a, float), np.asarray(b, float)
                    both = np.isfinite(a) & np.isfinite(b)
                    scale = np.nanmax(np.abs(b)) if np.isfinite(b).any() else 1.0
                    d[arr] = {"nan_mismatch": int(np.count_nonzero(np.isfinite(a) != np.isfinite(b))),
                              "max_abs": float(np.max(np.abs(a[both] - b[both]))) if both.any() else 0.0,
                              "max_rel_to_peak": float(np.max(np.abs(a[both] - b[both])) / scale) if both.any() else 0.0,
                              "n": int(both.sum())}
                diffs[tile.tile_id] = d

    # 2. bright isolated input stars in tile overlaps: exactly one merged row each
    sky = reader.load_catalog(cfg).sources
    ra, dec = np.asarray(sky.ra, float), np.asarray(sky.dec, float)
    mag = np.asarray(sky.mags[filt], float)
    x, y = grid.sky_to_pixel(ra, dec)
    from scipy.spatial import cKDTree

    tree = cKDTree(unit_vectors(ra, dec))
    near = tree.query_ball_point(unit_vectors(ra, dec), chord(1.0))
    isolated = np.array([all(mag[j] > mag[i] + 2.0 for j in js if j != i) for i, js in enumerate(near)])
    stars = np.asarray(sky.is_star, bool) & (mag < 23.5) & isolated
    inside = [(x >= t.x0 + 15) & (x < t.x1 - 15) & (y >= t.y0 + 15) & (y < t.y1 - 15) for t in grid.tiles]
    xi, yi = np.rint(x).astype(int), np.rint(y).astype(int)
    on_grid = (xi >= 0) & (xi < nx) & (yi >= 0) & (yi < ny)
    covered = np.zeros(len(x), bool)
    covered[on_grid] = single_wht[yi[on_grid], xi[on_grid]] > 0  # where the exposures put data
    in_overlap = stars & covered & (np.sum(inside, axis=0) >= 2)
    merged = Table.read(run.mosaic / f"{T.product_name(mine)}_cat.ecsv", format="ascii.ecsv")
    mtree = cKDTree(unit_vectors(merged["sky_centroid"].ra.deg, merged["sky_centroid"].dec.deg))
    tile_trees = {}
    for t in grid.tiles:
        tc = Table.read(run.mosaic / "tiles" / f"{T.tile_product(mine, t.tile_id)}_cat.ecsv", format="ascii.ecsv")
        tile_trees[t.tile_id] = cKDTree(unit_vectors(tc["sky_centroid"].ra.deg, tc["sky_centroid"].dec.deg))
    overlap = []
    for i in np.flatnonzero(in_overlap):
        v = unit_vectors([ra[i]], [dec[i]])[0]
        overlap.append({"mag": float(mag[i]), "merged": len(mtree.query_ball_point(v, chord(0.1))),
                        "tiles": sum(bool(tt.query_ball_point(v, chord(0.1))) for tt in tile_trees.values())})
    ids = [int(v) for v in merged["label"]]
    return {"diffs": diffs, "overlap_stars": overlap, "n_merged": len(merged), "ids_unique": len(set(ids)) == len(ids),
            "single_shape": list(res.extra["shape"])}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    print("RESULT " + json.dumps(main(*sys.argv[1:5])))
