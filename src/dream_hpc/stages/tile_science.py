"""The science check of a tiled mosaic, one tile at a time: for surveys whose tiles are never assembled.

A tiled mosaic (stages/tiles.py, tile_merge.py) is assembled into one i2d only up to
tile_merge.ASSEMBLE_MAX_PIXELS; a survey-sized filter keeps its tiles. Here each tile's i2d and
its own catalog are measured exactly as the single check measures a mosaic (science.measure), with
the truth read only for the rows near the tile (the prepared catalog's cell index) and:

- a truth source counts in the tile whose *core* holds its position (the cores partition the grid,
  as the merged catalog's sources are owned), so every source on the grid is judged once;
- isolation needs every neighbour within science.ISOLATION_RADIUS_ARCSEC: the truth is read that far
  (plus a pixel) beyond the whole tile, which reaches mosaic.tile_overlap_arcsec beyond its core;
- of each tile's sources only those that can move a verdict are kept (judged or matched); the rest are
  counted on the completeness tables' magnitude bins (science.Counted), so memory is one tile's
  images plus the judged/matched sources (the merge already holds the whole merged catalog);
- the tiles' kept sources are judged together (science.judge): the same fields and verdicts as a
  single mosaic's check, plus which tiles were judged and which not, and why.

Where a source's matched detection can differ from the assembled check's: the merged catalog keeps a
detection in the tile whose core holds its *centroid* and drops cross-tile duplicates within
tile_merge.DUPLICATE_PX, while here a tile's own catalog is used whole. So only truth sources within
MATCH_RADIUS_ARCSEC + DUPLICATE_PX of an inner core edge can be matched differently
(`edge_band_px`); elsewhere both checks see the same catalog row and the same ERR pixels.
"""

from __future__ import annotations

import dataclasses
import gc
import math
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.plan.grid import Grid, Tile
from dream_hpc.stages import science
from dream_hpc.stages.galaxy_check import BIN_MAG

BY_MAG_WIDTH = 0.5  # science.completeness_by_mag's default bin width


def tiles_of(index: dict[str, Any]) -> tuple[Grid, list[Tile]]:
    """The survey grid and its tiles from a filter's tile index (`<product>_tiles.json`, tile_merge.run_merge)."""
    tiles = []
    for t in index["tiles"]:
        m = re.fullmatch(r"r(\d+)c(\d+)", t["tile"])
        row, col = (int(m.group(1)), int(m.group(2))) if m else (0, 0)
        x0, x1, y0, y1 = t["tile_px"]
        cx0, cx1, cy0, cy1 = t["core_px"]
        tiles.append(Tile(t["tile"], col, row, x0, x1, y0, y1, cx0, cx1, cy0, cy1, tuple(t["crpix"]), list(t["inputs"])))
    grid = Grid.from_dict({**index["grid"], "tiles": []})
    grid.tiles = tiles
    return grid, tiles


def edge_band_px(grid: Grid) -> float:
    """Distance from an inner core edge within which a per-tile match may differ from the merged catalog's."""
    from dream_hpc.stages.tile_merge import DUPLICATE_PX

    return science.MATCH_RADIUS_ARCSEC / grid.pixel_scale + DUPLICATE_PX


def truth_reader(cfg: Any, run_root: Path) -> tuple[Callable[[Grid, Tile], Any], str]:
    """(tile -> the truth rows around it, how they are read): through the run's prepared catalog's cell
    index when there is one (only the cells near the tile are read), else the input catalog once."""
    from dream_hpc.catalog import prepared, reader

    margin = science.ISOLATION_RADIUS_ARCSEC + 1.0  # arcsec beyond the tile: every neighbour of its sources

    def box(grid: Grid, tile: Tile, ra: np.ndarray, dec: np.ndarray) -> np.ndarray:
        x, y = grid.sky_to_pixel(ra, dec)
        m = margin / grid.pixel_scale
        return (x >= tile.x0 - 0.5 - m) & (x < tile.x1 - 0.5 + m) & (y >= tile.y0 - 0.5 - m) & (y < tile.y1 - 0.5 + m)

    path = Path(run_root) / prepared.RUN_FILE
    if path.is_file():
        prep = prepared.open_prepared(path)

        def near(grid: Grid, tile: Tile) -> Any:
            cx, cy = (tile.x0 + tile.x1 - 1) / 2.0, (tile.y0 + tile.y1 - 1) / 2.0
            ra, dec = grid.pixel_to_sky([cx], [cy])
            radius = math.hypot(tile.x1 - tile.x0, tile.y1 - tile.y0) / 2.0 * grid.pixel_scale + margin + 1.0
            src = prep.near(float(ra[0]), float(dec[0]), radius).sources
            return src.take(np.flatnonzero(box(grid, tile, np.asarray(src.ra, float), np.asarray(src.dec, float))))

        return near, f"the prepared catalog's cells within each tile (+{margin:g}\")"
    whole = reader.load_catalog(cfg).sources  # no prepared file (a stage called outside a run): small surveys

    def cut(grid: Grid, tile: Tile) -> Any:
        return whole.take(np.flatnonzero(box(grid, tile, np.asarray(whole.ra, float), np.asarray(whole.dec, float))))

    return cut, "the input catalog (no prepared file in the run), cut to each tile"


def _keep(m: science.Measured, tile: Tile) -> tuple[dict[str, np.ndarray], science.Counted, int]:
    """A tile's owned sources that can move a verdict, and the others as counts."""
    p = m.points
    own = tile.in_core(p["x"], p["y"])
    keep = own & (p["sample"] | p["matched"])
    rest = own & ~keep
    counted = science.Counted(n=int(rest.sum()))
    for k, c in zip(*np.unique(np.floor(p["mag_in"][rest] / BY_MAG_WIDTH).astype(np.int64), return_counts=True),
                    strict=True):
        counted.by_bin[int(k)] = int(c)
    gal = rest & ~p["is_star"] & p["iso"] & np.isfinite(p["snr"])
    counted.n_isolated_galaxies = int(gal.sum())
    for k, c in zip(*np.unique(np.floor(p["mag_in"][gal] / BIN_MAG).astype(np.int64), return_counts=True), strict=True):
        counted.galaxies_by_bin[int(k)] = int(c)
    return {k: v[keep] for k, v in p.items()}, counted, int(own.sum())


def _add(total: science.Counted, more: science.Counted) -> None:
    total.n += more.n
    total.n_isolated_galaxies += more.n_isolated_galaxies
    for mine, theirs in ((total.by_bin, more.by_bin), (total.galaxies_by_bin, more.galaxies_by_bin)):
        for k, c in theirs.items():
            mine[k] = mine.get(k, 0) + c


def check_tiled(cfg: Any, filt: str, run_root: Path, index: dict[str, Any], n_output: int,
                not_made: dict[str, str], i2d: Path | None = None) -> dict[str, Any]:
    """The science check of filter `filt` from its tiles (see the module docstring).

    `index`: the filter's tile index; `not_made`: tile id -> why a planned tile has no products;
    `n_output`: the merged catalog's number of sources; `i2d`: the assembled mosaic when there is one
    (for the checks that read a whole mosaic: sky matching), else None."""
    from astropy.table import Table

    filt = filt.upper()
    run_root = Path(run_root)
    grid, tiles = tiles_of(index)
    read_truth, truth_how = truth_reader(cfg, run_root)
    parts: list[dict[str, np.ndarray]] = []
    counted = science.Counted()
    first: science.Measured | None = None
    judged: dict[str, dict[str, Any]] = {}
    not_judged: dict[str, str] = dict(not_made)
    entries = {t["tile"]: t for t in index["tiles"]}
    for tile in sorted(tiles, key=lambda t: (t.row, t.col)):
        e = entries[tile.tile_id]
        if tile.tile_id in not_judged:
            continue
        if not e.get("made"):
            not_judged[tile.tile_id] = "tile not made (see the run's mosaic log)"
            continue
        t0 = time.perf_counter()
        try:
            sky = read_truth(grid, tile)
            if filt not in sky.mags:
                raise ValueError(f"input catalog has no {filt} magnitudes (check catalog.columns.mag)")
            out = Table.read(run_root / e["cat"], format="ascii.ecsv")
            m = science.measure(cfg, filt, sky, run_root / e["i2d"], out)
        except Exception as ex:  # one unreadable tile: named, the others still judged
            not_judged[tile.tile_id] = f"{type(ex).__name__}: {ex}"[:300]
            continue
        kept, more, n_owned = _keep(m, tile)
        parts.append(kept)
        _add(counted, more)
        first = first or dataclasses.replace(m, points={})  # its aperture facts, not its arrays
        judged[tile.tile_id] = {"n_truth_rows_read": len(sky.ra), "n_input_owned": n_owned,
                                "n_bright_isolated": int(kept["sample"].sum()),
                                "n_recovered": int((kept["sample"] & kept["matched"]).sum()),
                                "n_catalog_rows": len(out), "wall_s": round(time.perf_counter() - t0, 2)}
        del m, out, sky
        # a datamodel's arrays sit in reference cycles: without this, several tiles' images can wait for
        # the cyclic collector (it counts objects, not bytes) -- measured: 4 small tiles 21.6 -> 48.3 MiB
        gc.collect()
    if first is None:
        raise ValueError(f"no tile of {filt} could be judged: "
                         + "; ".join(f"{t}: {why}" for t, why in sorted(not_judged.items())))
    keys = set().union(*(p.keys() for p in parts))
    points = {k: np.concatenate([p[k] if k in p else np.full(len(p["row"]), np.nan) for p in parts]) for k in keys}
    order = np.argsort(points["row"], kind="stable")
    points = {k: v[order] for k, v in points.items()}
    merged = science.Measured(filt, points, first.radius_px, first.ee, first.psf_half, first.pixel_arcsec,
                              first.galaxy_model, n_output, not_listed=counted)
    result = science.judge(merged, n_output, i2d)
    result["tiles"] = {
        "mode": "per tile", "n_planned": len(tiles), "judged": sorted(judged), "not_judged": not_judged,
        "per_tile": judged, "truth": truth_how,
        "ownership": "a truth source counts in the tile whose core holds its position",
        "sources_counted_not_kept": counted.n,
        "note": (f"each tile judged against its own catalog; within {edge_band_px(grid):.1f} px of an inner core "
                 "edge a source's match may differ from the merged catalog's (its duplicate removal)"),
    }
    reach = first.radius_px + 3  # science.measure: aperture + 2 px from an image edge, the S/N box's rounding
    if tiles and grid.overlap_px < reach:  # a tile's edge inside this of its core: those sources go unjudged
        result["tiles"]["overlap_warning"] = (f"tile overlap {grid.overlap_px} px < {reach:.1f} px: sources that close "
                                              "to an inner core edge are not judged (raise mosaic.tile_overlap_arcsec)")
    result["passed"]["all_tiles_judged"] = not not_judged
    return result
