"""The science check of a tiled run judged tile by tile beside the one on its assembled mosaic: run as a
subprocess by tests/stages/test_tiles.py (jwst and CRDS set up, as tests/_tiles_check.py).

    python tests/_tile_science_check.py CONFIG RUN SCRATCH FILTER

prints one JSON object: both checks' summary.json entries, their per-source arrays (truth row, judged,
matched, residuals, offsets, predicted S/N, distance to the nearest inner core edge), and the per-tile
check of the same run with one tile's catalog gone and another tile reported not made; then the
end-of-run summary entry of a copy of the run (in SCRATCH) judged per tile, as if its cores had not been
assembled (a survey-sized grid), with its printed lines.
"""

from __future__ import annotations

import copy
import json
import logging
import resource
import sys
import time
from pathlib import Path

import numpy as np

FIELDS = ("row", "sample", "matched", "resid_total", "dx", "dy", "snr", "is_star")


def arrays(check: dict) -> dict:
    p = check["_points"]
    return {k: [None if isinstance(v, float) and not np.isfinite(v) else v for v in np.asarray(p[k]).tolist()]
            for k in FIELDS}


def main(config: str, run_dir: str, scratch: str, filt: str) -> dict:
    from _tiles_check import offline_run

    from dream_hpc.core.rundir import RunDir
    from dream_hpc.core.runstate import read_run
    from dream_hpc.drivers import tiled_science
    from dream_hpc.stages import science, tile_science

    cfg, run = offline_run(config, run_dir)
    view = read_run(run)
    extra = view.mosaics[filt].data["extra"]
    assert extra["i2d"], "this comparison needs the assembled mosaic"

    t0 = time.process_time()
    assembled = science.check_filter(cfg, filt, run.root / extra["i2d"], run.root / extra["cat"], run.root)
    t_assembled = time.process_time() - t0
    t0 = time.process_time()
    tiled = tiled_science.check(cfg, run, view, filt, extra)
    t_tiled = time.process_time() - t0

    # distance of each judged source (grid pixels) to the nearest inner core edge
    index = json.loads((run.root / extra["tile_index"]).read_text())
    grid, tiles = tile_science.tiles_of(index)
    nx, ny = grid.shape
    xs = sorted({t.cx0 - 0.5 for t in tiles if t.cx0 > 0})
    ys = sorted({t.cy0 - 0.5 for t in tiles if t.cy0 > 0})

    def edge_distance(check: dict) -> list[float]:
        p = check["_points"]
        gx, gy = grid.sky_to_pixel(p["ra"], p["dec"])
        d = np.full(len(gx), np.inf)
        for x in xs:
            d = np.minimum(d, np.abs(gx - x))
        for y in ys:
            d = np.minimum(d, np.abs(gy - y))
        return d.tolist()

    # memory (Python's allocations, numpy's included): the whole per-tile check against measuring one tile
    import tracemalloc

    from astropy.table import Table

    read_truth, _ = tile_science.truth_reader(cfg, run.root)
    entries = {e["tile"]: e for e in index["tiles"]}

    def traced_peak_mb(func: object) -> float:
        tracemalloc.start()
        func()
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        return peak / 2**20

    one_tile = {t.tile_id: traced_peak_mb(lambda t=t: science.measure(
        cfg, filt, read_truth(grid, t), run.root / entries[t.tile_id]["i2d"],
        Table.read(run.root / entries[t.tile_id]["cat"], format="ascii.ecsv"))) for t in tiles}
    memory = {"one_tile_mb": one_tile,
              "per_tile_check_mb": traced_peak_mb(lambda: tiled_science.check(cfg, run, view, filt, extra)),
              "assembled_check_mb": traced_peak_mb(lambda: science.check_filter(
                  cfg, filt, run.root / extra["i2d"], run.root / extra["cat"], run.root))}

    # what a tile the check cannot read, and one the mosaic did not make, look like
    broken = copy.deepcopy(index)
    gone, unmade = broken["tiles"][0], broken["tiles"][1]
    gone["cat"] = gone["cat"].replace("_cat.ecsv", "_gone_cat.ecsv")
    unmade["made"] = False
    partial = tile_science.check_tiled(cfg, filt, run.root, broken, int(extra["n_sources"]),
                                       {unmade["tile"]: "tile task failed: test"}, None)
    # the end-of-run entry of a copy of the run, as for a grid too large to assemble
    import shutil

    from dream_hpc.drivers import summary

    copy_root = Path(scratch).resolve() / "run"
    shutil.copytree(run.root, copy_root, ignore=shutil.ignore_patterns("*_uncal.fits", "*_rate.fits"))
    copy_run = RunDir(copy_root)
    copy_view = read_run(copy_run)
    copy_view.mosaics[filt].data["extra"]["i2d"] = None
    (copy_root / extra["i2d"]).unlink()
    entry = summary.science_checks(cfg, copy_run, copy_view, {filt})[filt]
    lines = summary.mosaic_lines({filt: entry})
    return {"assembled": science.public(assembled), "tiled": science.public(tiled),
            "assembled_points": {**arrays(assembled), "edge_px": edge_distance(assembled)},
            "tiled_points": {**arrays(tiled), "edge_px": edge_distance(tiled)},
            "edge_band_px": tile_science.edge_band_px(grid), "cpu_s": {"assembled": t_assembled, "tiled": t_tiled},
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
            "partial": {"tiles": partial["tiles"], "passed": partial["passed"], "gone": gone["tile"],
                        "unmade": unmade["tile"], "n_bright_isolated": partial["n_bright_isolated"]},
            "memory": memory, "unassembled_entry": entry, "unassembled_lines": lines}


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    print("RESULT " + json.dumps(main(*sys.argv[1:5]), default=str))
