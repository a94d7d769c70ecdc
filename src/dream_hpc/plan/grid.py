"""The survey's one pixel grid per channel and its tiles: what each Image3 tile task resamples onto.

As COSMOS-Web and CEERS did (see docs and /work/shared/notes/survey-mosaics.md): one tangent point
(`crval`), one rotation and one pixel scale per channel; tiles are windows of that grid that differ
only in `crpix` and `output_shape`, so an exposure has the same WCS and the same mosaic pixels in
every tile it touches. Each tile has a *core* (the tiles' cores partition the grid: a source belongs
to the tile whose core holds it) and reaches `mosaic.tile_overlap_arcsec` beyond it.

The pixel <-> sky math is jwst/stcal's (`stcal.alignment.util.wcs_from_sregions` with `rotation`
given and NIRCam's VIdlParity = -1): east = -x cos r + y sin r, north = x sin r + y cos r (in
pixels times the scale, about the tangent point), so the Y axis points at position angle r.
tests/test_tiles.py checks this against the WCS of a tile jwst made.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import cost

EDGE_MARGIN_ARCSEC = 1.0  # grid beyond the outermost exposure corner (pointing and tweakreg shifts)
TOUCH_MARGIN_ARCSEC = 0.5  # an exposure "touches" a tile when its outline comes this close
NODE_RESERVE = 0.15  # memory a node keeps for the OS and the rank (as cost.ranks_per_node)
# A tile task runs in a fresh worker of its rank (engine/executor.py: "fresh_worker", so its memory
# does not carry the heap earlier tasks left; a long-lived worker grew 3-7 MB per task, 470 -> 800 MB
# over 40 tasks of the doubled demo): jwst and Mirage imported, cost.IMG3_FIXED_MB (318) being a
# process with jwst only. Measured: see docs/mosaic-tiles.md.
TILE_WORKER_MB = 600.0


@dataclass
class Tile:
    """One window of a channel's grid: pixels [x0, x1) x [y0, y1) of the grid, core [cx0, cx1) x [cy0, cy1)."""

    tile_id: str  # r<row>c<col>, e.g. r0c1
    col: int
    row: int
    x0: int
    x1: int
    y0: int
    y1: int
    cx0: int
    cx1: int
    cy0: int
    cy1: int
    crpix: tuple[float, float]  # 0-based, jwst resample `crpix`
    units: list[str] = field(default_factory=list)  # unit ids of the exposures that touch it

    @property
    def output_shape(self) -> tuple[int, int]:
        """(nx, ny): jwst resample `output_shape` order."""
        return (self.x1 - self.x0, self.y1 - self.y0)

    def in_core(self, x: Any, y: Any) -> np.ndarray:
        """Which tile pixel positions (x, y: this tile's pixel coordinates) lie in its core.

        Pixel centres are integers, so the core of pixels [cx0, cx1) spans [cx0 - 0.5, cx1 - 0.5)."""
        gx, gy = np.asarray(x, float) + self.x0, np.asarray(y, float) + self.y0
        return (gx >= self.cx0 - 0.5) & (gx < self.cx1 - 0.5) & (gy >= self.cy0 - 0.5) & (gy < self.cy1 - 0.5)


@dataclass
class Grid:
    """One channel's survey grid: tangent point, rotation, scale, its size and its tiles."""

    channel: str  # SHORT | LONG
    crval: tuple[float, float]
    rotation: float
    pixel_scale: float
    crpix: tuple[float, float]  # 0-based grid pixel of the tangent point
    shape: tuple[int, int]  # (nx, ny)
    overlap_px: int
    tiles: list[Tile] = field(default_factory=list)
    tiles_given: bool = False  # mosaic.tiles set (else sized by memory)

    def sky_to_pixel(self, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
        """Grid pixel coordinates (0-based) of sky positions."""
        from dream_hpc.plan.footprint import tangent_offsets

        east, north = tangent_offsets(ra, dec, *self.crval)
        r = math.radians(self.rotation)
        x = (-east * math.cos(r) + north * math.sin(r)) / self.pixel_scale
        y = (east * math.sin(r) + north * math.cos(r)) / self.pixel_scale
        return x + self.crpix[0], y + self.crpix[1]

    def pixel_to_sky(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
        from dream_hpc.plan.footprint import from_tangent

        r = math.radians(self.rotation)
        dx = (np.asarray(x, float) - self.crpix[0]) * self.pixel_scale
        dy = (np.asarray(y, float) - self.crpix[1]) * self.pixel_scale
        return from_tangent(-dx * math.cos(r) + dy * math.sin(r), dx * math.sin(r) + dy * math.cos(r), *self.crval)

    def resample_pars(self, tile: Tile) -> dict[str, Any]:
        """The jwst resample step parameters that put a tile on this grid (only crpix/output_shape vary)."""
        return {"crval": [float(v) for v in self.crval], "rotation": float(self.rotation),
                "pixel_scale": float(self.pixel_scale), "crpix": [float(v) for v in tile.crpix],
                "output_shape": [int(v) for v in tile.output_shape]}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Grid:
        tiles = [Tile(**{**t, "crpix": tuple(t["crpix"])}) for t in d.get("tiles", [])]
        return cls(**{**d, "crval": tuple(d["crval"]), "crpix": tuple(d["crpix"]), "shape": tuple(d["shape"]),
                      "tiles": tiles})


def channel_of(filter_: str, units: list[WorkUnit]) -> str:
    return next(u.channel for u in units if u.filter.upper() == filter_.upper())


def grid_params(cfg: SurveyConfig, channel: str) -> tuple[tuple[float, float], float, float]:
    """(crval, rotation, pixel scale) of a channel's grid: config, or the survey centre and PA."""
    m, p = cfg.mosaic, cfg.pointings
    crval = tuple(m.crval) if m.crval is not None else (p.center_ra, p.center_dec)
    rotation = m.rotation if m.rotation is not None else p.pa_v3
    scale = m.pixel_scale_sw if channel == "SHORT" else m.pixel_scale_lw
    return (float(crval[0]), float(crval[1])), float(rotation) % 360.0, float(scale)


def unit_corners(unit: WorkUnit) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec of the unit's aperture corners (cached: planning asks for them per channel and filter)."""
    return _corners(unit.ra, unit.dec, unit.pa_v3, unit.aperture)


@functools.lru_cache(maxsize=65536)
def _corners(ra: float, dec: float, pa_v3: float, aperture: str) -> tuple[np.ndarray, np.ndarray]:
    from dream_hpc.plan.footprint import outline_sky

    return outline_sky(ra, dec, pa_v3, aperture)


def _cut(n: int, parts: int) -> list[int]:
    return [round(n * i / parts) for i in range(parts + 1)]


def _tiles(nx: int, ny: int, cols: int, rows: int, overlap: int, crpix: tuple[float, float]) -> list[Tile]:
    xe, ye = _cut(nx, cols), _cut(ny, rows)
    tiles = []
    for row in range(rows):
        for col in range(cols):
            x0, x1 = max(0, xe[col] - overlap), min(nx, xe[col + 1] + overlap)
            y0, y1 = max(0, ye[row] - overlap), min(ny, ye[row + 1] + overlap)
            tiles.append(Tile(f"r{row}c{col}", col, row, x0, x1, y0, y1, xe[col], xe[col + 1], ye[row], ye[row + 1],
                              (crpix[0] - x0, crpix[1] - y0)))
    return tiles


def _touching(tiles: list[Tile], boxes: dict[str, tuple[np.ndarray, np.ndarray]], margin_px: float) -> None:
    """Fill each tile's `units`: exposures whose outline comes within `margin_px` of the tile."""
    from matplotlib.path import Path as MplPath
    from matplotlib.transforms import Bbox

    ids = list(boxes)
    paths = [MplPath(np.column_stack(boxes[uid])) for uid in ids]
    lo = np.array([[boxes[u][0].min(), boxes[u][1].min()] for u in ids])
    hi = np.array([[boxes[u][0].max(), boxes[u][1].max()] for u in ids])
    for t in tiles:
        # tile pixels span [x0 - 0.5, x1 - 0.5) in pixel-centre coordinates
        bx = (t.x0 - 0.5 - margin_px, t.x1 - 0.5 + margin_px, t.y0 - 0.5 - margin_px, t.y1 - 0.5 + margin_px)
        box = Bbox([[bx[0], bx[2]], [bx[1], bx[3]]])
        near = np.flatnonzero((lo[:, 0] < bx[1]) & (hi[:, 0] > bx[0]) & (lo[:, 1] < bx[3]) & (hi[:, 1] > bx[2]))
        t.units = sorted(ids[i] for i in near if paths[i].intersects_bbox(box, filled=True))


def tile_cost(tile: Tile, pixels_per_unit: dict[str, int]) -> cost.StageCost:
    """One tile task (resample + source_catalog; tweakreg/skymatch/outliers done before, once): the
    Image3 cost model with one layer (no outlier stack) over the tile's inputs and pixels."""
    n = len(tile.units)
    in_pix = sum(pixels_per_unit[u] for u in tile.units)
    nx, ny = tile.output_shape
    c = cost.image3_cost(n, in_pix, float(nx * ny), n_groups=1)
    return cost.StageCost(c.cpu_s, c.mem_mb - cost.IMG3_FIXED_MB + TILE_WORKER_MB)


def make_grid(cfg: SurveyConfig, units: list[WorkUnit], channel: str, node_mem_gb: float | None = None) -> Grid:
    """The grid of one channel over all its units, cut into tiles (given, or the fewest that fit memory)."""
    crval, rotation, scale = grid_params(cfg, channel)
    mine = [u for u in units if u.channel == channel]
    if not mine:
        raise ValueError(f"no {channel} units to grid")
    corners = {u.unit_id: unit_corners(u) for u in mine}
    probe = Grid(channel, crval, rotation, scale, (0.0, 0.0), (1, 1), 0)
    pix = {uid: probe.sky_to_pixel(*rd) for uid, rd in corners.items()}
    xs = np.concatenate([p[0] for p in pix.values()])
    ys = np.concatenate([p[1] for p in pix.values()])
    margin = EDGE_MARGIN_ARCSEC / scale
    x_lo, y_lo = math.floor(xs.min() - margin), math.floor(ys.min() - margin)
    nx, ny = math.ceil(xs.max() + margin) - x_lo + 1, math.ceil(ys.max() + margin) - y_lo + 1
    crpix = (float(-x_lo), float(-y_lo))
    boxes = {uid: (p[0] - x_lo, p[1] - y_lo) for uid, p in pix.items()}
    overlap = int(math.ceil(cfg.mosaic.tile_overlap_arcsec / scale))
    grid = Grid(channel, crval, rotation, scale, crpix, (int(nx), int(ny)), overlap, tiles_given=cfg.mosaic.tiles is not None)
    pixels = {u.unit_id: cost.unit_pixels(u) for u in mine}
    touch = TOUCH_MARGIN_ARCSEC / scale
    if cfg.mosaic.tiles is not None:
        cols, rows = cfg.mosaic.tiles
        grid.tiles = _tiles(grid.shape[0], grid.shape[1], cols, rows, overlap, crpix)
        _touching(grid.tiles, boxes, touch)
        return grid
    budget_mb = (node_mem_gb if node_mem_gb is not None else cfg.mosaic.node_mem_gb) * cost.GiB * (1 - NODE_RESERVE)
    side = float(max(nx, ny))
    while True:  # shrink square-ish tiles until the largest tile task fits a node
        cols, rows = max(1, math.ceil(nx / side)), max(1, math.ceil(ny / side))
        grid.tiles = _tiles(grid.shape[0], grid.shape[1], cols, rows, overlap, crpix)
        _touching(grid.tiles, boxes, touch)
        worst = max(tile_cost(t, pixels).mem_mb for t in grid.tiles)
        if worst <= budget_mb or side <= 4 * overlap + 16:
            return grid
        side /= 1.25


def filter_tiles(cfg: SurveyConfig, units: list[WorkUnit], node_mem_gb: float | None = None) -> dict[str, Grid]:
    """Filter -> its channel's grid with each tile's `units` restricted to that filter's exposures.

    Every filter of a channel shares the channel's grid (same crval, rotation, scale, tiles)."""
    grids = {ch: make_grid(cfg, units, ch, node_mem_gb) for ch in sorted({u.channel for u in units})}
    out = {}
    for filt in sorted({u.filter for u in units}):
        ids = {u.unit_id for u in units if u.filter == filt}
        g = grids[channel_of(filt, units)]
        out[filt] = Grid.from_dict({**g.to_dict(), "tiles": [
            {**asdict(t), "units": [x for x in t.units if x in ids]} for t in g.tiles]})
    return out


def tiles_summary(cfg: SurveyConfig, units: list[WorkUnit], node_mem_gb: float | None = None) -> dict[str, Any]:
    """For `dream-hpc plan`: per filter, the grid, tiles, inputs per tile, CPU and memory per tile task."""
    grids = filter_tiles(cfg, units, node_mem_gb)
    pixels = {u.unit_id: cost.unit_pixels(u) for u in units}
    out = {}
    for filt, g in grids.items():
        costs = [tile_cost(t, pixels) for t in g.tiles if t.units]
        n_in = [len(t.units) for t in g.tiles if t.units]
        out[filt] = {
            "channel": g.channel, "pixel_scale": g.pixel_scale, "grid_shape": list(g.shape),
            "crval": list(g.crval), "rotation": g.rotation,
            "tiles": len([t for t in g.tiles if t.units]), "layout": [max(t.col for t in g.tiles) + 1,
                                                                     max(t.row for t in g.tiles) + 1],
            "tile_shape_max": [max(t.output_shape[0] for t in g.tiles), max(t.output_shape[1] for t in g.tiles)],
            "inputs_per_tile": {"min": min(n_in, default=0), "max": max(n_in, default=0),
                                "mean": round(sum(n_in) / max(len(n_in), 1), 1)},
            "tile_cpu_s_max": round(max((c.cpu_s for c in costs), default=0.0), 1),
            "tile_cpu_s_total": round(sum(c.cpu_s for c in costs), 1),
            "tile_mem_mb_max": round(max((c.mem_mb for c in costs), default=0.0)),
            "sized_by": "mosaic.tiles" if g.tiles_given else f"memory ({node_mem_gb or cfg.mosaic.node_mem_gb:g} GB node)",
        }
    return out


def format_tiles(summary: dict[str, Any]) -> list[str]:
    lines = []
    for filt, s in summary.items():
        ipt = s["inputs_per_tile"]
        lines.append(f"tiles {filt}: {s['tiles']} ({s['layout'][0]} x {s['layout'][1]}, by {s['sized_by']}) on a "
                     f"{s['grid_shape'][0]} x {s['grid_shape'][1]} px grid at {s['pixel_scale']:g}\"/px, rotation "
                     f"{s['rotation']:g} deg; tiles up to {s['tile_shape_max'][0]} x {s['tile_shape_max'][1]} px, "
                     f"{ipt['min']}-{ipt['max']} inputs each (mean {ipt['mean']}); per tile task up to "
                     f"{s['tile_cpu_s_max'] / 60:.1f} CPU-min, {s['tile_mem_mb_max'] / 1024:.2f} GiB")
    return lines


# --- task names: one scheme for the engine's graph (engine/mosaic_graph.py) and its readers ----------
def visit_id(unit: WorkUnit) -> str:
    """A visit in tiled-mosaic task labels, e.g. the `o001v003` of `F150W/astrometry/o001v003`."""
    return f"o{unit.observation:03d}v{unit.visit:03d}"


def task_label(filt: str, phase: str, ident: str) -> str:
    """`FILTER/phase/id` (astrometry and outliers per visit, tile per tile id); the merge is `FILTER`."""
    return f"{filt}/{phase}/{ident}"
