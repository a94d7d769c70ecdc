"""The last task of a tiled mosaic (stages/tiles.py): one product per filter from its tiles.

- one source catalog: a source belongs to the tile whose core holds its centroid; ids are
  (tile number + 1) x 10^6 + the tile catalog's label (unique, and stable while the grid is);
- a tile index (JSON: which tile covers which sky, which inputs went in, which tiles are missing);
- a downsampled preview of the whole filter, one tile in memory at a time;
- for grids up to ASSEMBLE_MAX_PIXELS, the tile cores assembled on the grid as `<product>_i2d.fits`
  (what the science check and a small survey's user read; big surveys keep the tiles only).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.core.rundir import atomic_path, atomic_write_text
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan.grid import Grid, Tile
from dream_hpc.stages.contract import StageContext, StageResult
from dream_hpc.stages.image3 import product_name
from dream_hpc.stages.tile_products import missing as missing_inputs
from dream_hpc.stages.tile_products import result, save_model

ASSEMBLE_MAX_PIXELS = 64_000_000  # grids up to this are also assembled whole (science check, tests)
PREVIEW_MAX_PX = 2000  # the preview's longest side
ID_BLOCK = 1_000_000  # merged id = (tile number + 1) * ID_BLOCK + the tile's own label
DUPLICATE_PX = 1.0  # two kept detections from different tiles closer than this are one source


# --- 4. merge --------------------------------------------------------------------------------
def merge_catalogs(grid: Grid, tiles: Sequence[tuple[Tile, Path]]) -> tuple[Any, dict[str, int]]:
    """One table: each tile's sources inside its core, on grid pixels, with unique stable ids."""
    from astropy.table import Table, vstack

    number = {t.tile_id: i for i, t in enumerate(grid.tiles)}
    parts, kept = [], {}
    for tile, cat in tiles:
        table = Table.read(cat, format="ascii.ecsv")
        keep = tile.in_core(np.asarray(table["xcentroid"], float), np.asarray(table["ycentroid"], float))
        table = table[keep]
        table["tile_label"] = table["label"]
        table["tile_id"] = [tile.tile_id] * len(table)
        table["label"] = (number[tile.tile_id] + 1) * ID_BLOCK + np.asarray(table["tile_label"], int)
        table["xcentroid"] = np.asarray(table["xcentroid"], float) + tile.x0  # grid pixels
        table["ycentroid"] = np.asarray(table["ycentroid"], float) + tile.y0
        kept[tile.tile_id] = len(table)
        parts.append(table)
    if not parts:
        return Table(), kept
    merged = vstack(parts, metadata_conflicts="silent")
    merged.meta = dict(parts[0].meta)
    # The same object seen by two tiles lands in one core only if both centroids fall on the same side
    # of the core edge; a pair straddling it within DUPLICATE_PX is one source: keep the lower id.
    if len(merged) > 1:
        from scipy.spatial import cKDTree

        xy = np.column_stack([merged["xcentroid"], merged["ycentroid"]])
        drop = set()
        for i, j in sorted(cKDTree(xy).query_pairs(DUPLICATE_PX)):
            if merged["tile_id"][i] != merged["tile_id"][j]:
                drop.add(max(i, j, key=lambda k: int(merged["label"][k])))
        if drop:
            merged.remove_rows(sorted(drop))
        kept["duplicates_removed"] = len(drop)
    merged.sort("label")
    merged.meta["dream_hpc"] = {"grid": {k: v for k, v in grid.to_dict().items() if k != "tiles"},
                                "ids": f"(tile number + 1) * {ID_BLOCK} + the tile catalog's label",
                                "xy": "xcentroid/ycentroid are pixels of the survey grid (0-based)"}
    return merged, kept


def grid_wcs(tile_wcs: Any, tile: Tile, shape: tuple[int, int]) -> Any:
    """The survey grid's WCS from a tile's: grid pixel (X, Y) is tile pixel (X - x0, Y - y0)."""
    import gwcs
    from astropy.modeling.models import Shift

    steps = tile_wcs.pipeline
    wcs = gwcs.WCS([(steps[0].frame, (Shift(-tile.x0) & Shift(-tile.y0)) | steps[0].transform),
                    *[(s.frame, s.transform) for s in steps[1:]]])
    ny, nx = shape
    wcs.bounding_box = ((-0.5, nx - 0.5), (-0.5, ny - 0.5))
    wcs.pixel_shape = (nx, ny)
    wcs.array_shape = (ny, nx)
    return wcs


def assemble(grid: Grid, tiles: Sequence[tuple[Tile, Path]], path: Path) -> Path:
    """The tile cores on the whole grid, one ImageModel (SCI, ERR, WHT, CON not kept): small grids only."""
    from stdatamodels.jwst import datamodels

    nx, ny = grid.shape
    out = None
    for tile, i2d in tiles:
        with datamodels.open(str(i2d)) as m:
            if out is None:
                out = datamodels.ImageModel((ny, nx))
                out.update(m)
                out.data = np.full((ny, nx), np.nan, np.float32)
                out.err = np.full((ny, nx), np.nan, np.float32)
                out.wht = np.zeros((ny, nx), np.float32)
                out.meta.wcs = grid_wcs(m.meta.wcs, tile, (ny, nx))
            sy = slice(tile.cy0 - tile.y0, tile.cy1 - tile.y0)
            sx = slice(tile.cx0 - tile.x0, tile.cx1 - tile.x0)
            out.data[tile.cy0:tile.cy1, tile.cx0:tile.cx1] = m.data[sy, sx]
            out.err[tile.cy0:tile.cy1, tile.cx0:tile.cx1] = m.err[sy, sx]
            out.wht[tile.cy0:tile.cy1, tile.cx0:tile.cx1] = m.wht[sy, sx]
    assert out is not None
    out.meta.filename = path.name
    save_model(out, path)
    return path


def assemble_segm(grid: Grid, tiles: Sequence[tuple[Tile, Path]], path: Path) -> Path:
    """The tiles' segmentation cores on the grid, labels turned into the merged catalog's ids."""
    from stdatamodels.jwst import datamodels

    number = {t.tile_id: i for i, t in enumerate(grid.tiles)}
    nx, ny = grid.shape
    out = datamodels.SegmentationMapModel(np.zeros((ny, nx), np.int32))
    for tile, segm in tiles:
        with datamodels.open(str(segm)) as m:
            core = np.asarray(m.data[tile.cy0 - tile.y0:tile.cy1 - tile.y0, tile.cx0 - tile.x0:tile.cx1 - tile.x0])
            if tile is tiles[0][0]:
                out.update(m)
        out.data[tile.cy0:tile.cy1, tile.cx0:tile.cx1] = np.where(
            core > 0, (number[tile.tile_id] + 1) * ID_BLOCK + core, 0).astype(np.int32)
    out.meta.filename = path.name
    save_model(out, path)
    return path


def preview(grid: Grid, tiles: Sequence[tuple[Tile, Path]], png: Path, title: str, catalog: Any = None) -> Path:
    """The whole filter, block-averaged so its longest side is <= PREVIEW_MAX_PX, one tile in memory at a time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from astropy.io import fits
    from astropy.visualization import AsinhStretch, ImageNormalize, PercentileInterval

    nx, ny = grid.shape
    f = max(1, math.ceil(max(nx, ny) / PREVIEW_MAX_PX))
    canvas = np.full((math.ceil(ny / f), math.ceil(nx / f)), np.nan)
    for tile, i2d in tiles:
        with fits.open(i2d, memmap=True) as hdul:
            core = np.array(hdul["SCI"].data[tile.cy0 - tile.y0:tile.cy1 - tile.y0,
                                             tile.cx0 - tile.x0:tile.cx1 - tile.x0], float)
        core[core == 0] = np.nan
        # block-average on the grid's block lattice, so tiles join without seams
        for by in range(tile.cy0 // f, math.ceil(tile.cy1 / f)):
            ys = slice(max(by * f, tile.cy0) - tile.cy0, min((by + 1) * f, tile.cy1) - tile.cy0)
            row = core[ys]
            for bx in range(tile.cx0 // f, math.ceil(tile.cx1 / f)):
                block = row[:, max(bx * f, tile.cx0) - tile.cx0:min((bx + 1) * f, tile.cx1) - tile.cx0]
                if block.size and np.isfinite(block).any():
                    canvas[by, bx] = np.nanmean(block)
    finite = np.isfinite(canvas)
    norm = ImageNormalize(canvas[finite] if finite.any() else np.zeros(1), interval=PercentileInterval(99.5),
                          stretch=AsinhStretch(0.05))
    fig, ax = plt.subplots(figsize=(8, 8 * canvas.shape[0] / max(canvas.shape[1], 1) + 0.6))
    ax.imshow(canvas, origin="lower", cmap="gray_r", norm=norm, interpolation="nearest",
              extent=(-0.5, nx - 0.5, -0.5, ny - 0.5))
    for tile in grid.tiles:
        ax.add_patch(plt.Rectangle((tile.cx0 - 0.5, tile.cy0 - 0.5), tile.cx1 - tile.cx0, tile.cy1 - tile.cy0,
                                   fill=False, edgecolor="tab:blue", linewidth=0.8))
        ax.text(tile.cx0 + 5, tile.cy0 + 5, tile.tile_id, color="tab:blue", fontsize=7)
    n = 0
    if catalog is not None and len(catalog):
        n = len(catalog)
        ax.scatter(catalog["xcentroid"], catalog["ycentroid"], s=8, facecolors="none", edgecolors="tab:red",
                   linewidths=0.4)
    ax.set_title(f"{title}: {len(tiles)} tiles, {nx}x{ny} grid px (shown 1:{f}), {n} sources", fontsize=9)
    ax.set_xlabel("grid x [pixel]")
    ax.set_ylabel("grid y [pixel]")
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return png


def run_merge(spec: dict[str, Any], units: Sequence[WorkUnit], ctx: StageContext) -> StageResult:
    """The user's product per filter from its tiles: merged catalog, tile index, preview (and assembled cores)."""
    run = ctx.run
    filt = spec["filter"]
    grid = Grid.from_dict(spec["grid"])
    by_id = {t.tile_id: t for t in grid.tiles}
    made = spec["tiles"]  # tile id -> {"i2d", "segm", "cat", "inputs"}
    tiles = sorted(((by_id[tid], run.root / d["i2d"], run.root / d["cat"]) for tid, d in made.items()),
                   key=lambda x: (x[0].row, x[0].col))
    segms = {tid: run.root / d["segm"] for tid, d in made.items() if d.get("segm")}
    missing_inputs([p for t in tiles for p in t[1:]], "tile product(s)")
    name = product_name(units)
    t0 = time.perf_counter()
    merged, kept = merge_catalogs(grid, [(t, cat) for t, _, cat in tiles])
    cat_path = run.mosaic / f"{name}_cat.ecsv"
    with atomic_path(cat_path) as tmp, open(tmp, "w") as f:
        merged.write(f, format="ascii.ecsv")
    missing = sorted(set(spec.get("planned", [])) - set(made))
    index = {"filter": filt, "product": name, "grid": {k: v for k, v in grid.to_dict().items() if k != "tiles"},
             "catalog": run.rel(cat_path), "missing_tiles": missing, "tiles": []}
    for tile in grid.tiles:
        d = made.get(tile.tile_id)
        ra, dec = grid.pixel_to_sky([tile.cx0 - 0.5, tile.cx1 - 0.5, tile.cx1 - 0.5, tile.cx0 - 0.5],
                                    [tile.cy0 - 0.5, tile.cy0 - 0.5, tile.cy1 - 0.5, tile.cy1 - 0.5])
        index["tiles"].append({
            "tile": tile.tile_id, "core_px": [tile.cx0, tile.cx1, tile.cy0, tile.cy1],
            "tile_px": [tile.x0, tile.x1, tile.y0, tile.y1], "crpix": list(tile.crpix),
            "output_shape": list(tile.output_shape), "core_sky_corners": [[float(a), float(b)] for a, b in zip(ra, dec, strict=True)],
            "inputs": d["inputs"] if d else tile.units, "made": d is not None,
            **({k: d[k] for k in ("i2d", "segm", "cat")} if d else {}), "n_sources": kept.get(tile.tile_id, 0)})
    index_path = run.mosaic / f"{name}_tiles.json"
    atomic_write_text(index_path, json.dumps(index, indent=1) + "\n")
    png = preview(grid, [(t, i2d) for t, i2d, _ in tiles], run.figures / f"mosaic_{filt.lower()}.png",
                  f"{name} (tiles)", merged)
    outputs = [cat_path, index_path, png]
    from astropy.table import Table, unique, vstack

    refcats = sorted((run.mosaic / "astrometry").glob(f"*_{filt.lower()}_refcat.ecsv"))
    n_ref = len(unique(vstack([Table.read(p, format="ascii.ecsv") for p in refcats]))) if refcats else 0
    assembled = None
    if grid.shape[0] * grid.shape[1] <= ASSEMBLE_MAX_PIXELS and not missing:
        assembled = assemble(grid, [(t, i2d) for t, i2d, _ in tiles], run.mosaic / f"{name}_i2d.fits")
        outputs.append(assembled)
        if len(segms) == len(tiles):
            outputs.append(assemble_segm(grid, [(t, segms[t.tile_id]) for t, _, _ in tiles],
                                         run.mosaic / f"{name}_segm.fits"))
    # the filter's level-3 association: every _cal file that went into its tiles
    from dream_hpc.stages.contract import product_path
    from dream_hpc.stages.image3 import association

    used = sorted({u for d in made.values() for u in d["inputs"]})
    members = [u for u in units if u.unit_id in used]
    asn_path = run.mosaic / f"{filt.lower()}_asn.json"
    asn = association(members, [product_path(run, u, "image2") for u in members], run.mosaic)
    asn["constraints"] += f"; tiled on one grid: {len(tiles)} tiles, see {index_path.name}"
    atomic_write_text(asn_path, json.dumps(asn, indent=1) + "\n")
    outputs.append(asn_path)
    return result(run, [p for t in tiles for p in t[1:]], outputs, {}, {"merge": time.perf_counter() - t0},
                   {"phase": "merge", "filter": filt, "product": name, "n_tiles": len(tiles),
                    "missing_tiles": missing, "n_sources": len(merged), "kept_per_tile": kept,
                    "n_inputs": len({u for d in made.values() for u in d["inputs"]}),
                    "tweakreg": {"per_visit": True, "see": "astrometry tasks"}, "n_refcat_stars": n_ref,
                    "i2d": run.rel(assembled) if assembled else None, "cat": run.rel(cat_path),
                    "asn": run.rel(asn_path), "segm": run.rel(run.mosaic / f"{name}_segm.fits") if assembled else None,
                    "tile_index": run.rel(index_path), "preview": run.rel(png),
                    "tiles": {tid: d["i2d"] for tid, d in made.items()}})
