"""The footprint PNG: every detector outline on the sky, per filter, over the catalog's source density."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.config import SurveyConfig
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import footprint
from dream_hpc.plan.pointings import is_short_wave_filter


def _centre(units: list[WorkUnit]) -> tuple[float, float]:
    v = footprint.unit_vectors([u.ra for u in units], [u.dec for u in units]).mean(axis=0)
    return float(np.rad2deg(np.arctan2(v[1], v[0])) % 360.0), float(np.rad2deg(np.arcsin(v[2] / np.linalg.norm(v))))


_OUTLINE_CACHE: dict[tuple, np.ndarray] = {}


def _outlines(units: list[WorkUnit], ra0: float, dec0: float) -> list[tuple[np.ndarray, str]]:
    """Tangent-plane outline (4, 2 arcsec, x = East) and channel of each distinct unit footprint."""
    out, seen = [], set()
    for u in units:
        key = (u.detector, u.subarray, round(u.ra, 9), round(u.dec, 9), u.pa_v3, ra0, dec0)
        if key in seen:
            continue
        seen.add(key)
        if key not in _OUTLINE_CACHE:
            ra, dec = footprint.outline_sky(u.ra, u.dec, u.pa_v3, footprint.aperture_name(u.detector, u.subarray))
            _OUTLINE_CACHE[key] = np.column_stack(footprint.tangent_offsets(ra, dec, ra0, dec0))
        out.append((_OUTLINE_CACHE[key], u.channel))
    return out


FILTER_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def footprint_png(cfg: SurveyConfig, units: list[WorkUnit], path: str | Path, catalog_ra_dec: Any = None,
                  tiles: dict[str, Any] | None = None, catalog_weight: float = 1.0) -> Path:
    """Detector outlines per filter over the catalog's source density, on a tangent plane (East left);
    with `tiles` (plan/grid.filter_tiles), each channel's mosaic tile cores and their ids.
    `catalog_weight`: sources each given position stands for (a subsample, prepared.sample_positions)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.collections import PolyCollection
    from matplotlib.lines import Line2D

    from dream_hpc.core.rundir import atomic_path

    ra0, dec0 = _centre(units)
    scale = 60.0 if _span(units, ra0, dec0) > 300 else 1.0  # arcmin for big surveys, arcsec for small
    unit_name = "arcmin" if scale == 60.0 else "arcsec"
    fig, ax = plt.subplots(figsize=(9, 8), dpi=110)
    if catalog_ra_dec is not None and len(catalog_ra_dec[0]):
        x, y = footprint.tangent_offsets(*catalog_ra_dec, ra0, dec0)
        allxy = np.vstack([p for p, _ in _outlines(units, ra0, dec0)])
        pad = 0.15 * (allxy.max() - allxy.min())
        lo, hi = allxy.min(axis=0) - pad, allxy.max(axis=0) + pad
        sel = (x > lo[0]) & (x < hi[0]) & (y > lo[1]) & (y < hi[1])
        nb = int(np.clip(np.sqrt(sel.sum() / 15.0), 6, 80))  # ~15 sources per bin: a density, not dots
        h, xe, ye = np.histogram2d(x[sel], y[sel], bins=nb, range=[[lo[0], hi[0]], [lo[1], hi[1]]])
        per_arcmin2 = catalog_weight * h / ((xe[1] - xe[0]) * (ye[1] - ye[0]) / 3600.0)
        im = ax.imshow(np.log10(np.maximum(per_arcmin2.T, 1.0)), origin="lower", cmap="Greys", alpha=0.7,
                       interpolation="bicubic",
                       extent=[xe[0] / scale, xe[-1] / scale, ye[0] / scale, ye[-1] / scale], aspect="equal")
        cb = fig.colorbar(im, ax=ax, shrink=0.7, pad=0.02)
        cb.set_label("catalog sources per arcmin$^2$ (log$_{10}$)")
    filters = sorted({u.filter for u in units}, key=lambda f: (not is_short_wave_filter(f), f))
    handles = []
    for i, filt in enumerate(filters):
        sub = [u for u in units if u.filter == filt]
        polys = [p / scale for p, _ in _outlines(sub, ra0, dec0)]
        colour = FILTER_COLOURS[i % len(FILTER_COLOURS)]
        lw = "-" if is_short_wave_filter(filt) else "--"
        ax.add_collection(PolyCollection(polys, facecolors=colour, edgecolors="none",
                                         alpha=0.08 if len(polys) < 2000 else 0.04))
        ax.add_collection(PolyCollection(polys, facecolors="none", edgecolors=colour, linewidths=0.6, linestyles=lw))
        handles.append(Line2D([], [], color=colour, ls=lw, lw=2,
                              label=f"{filt} ({'SW' if is_short_wave_filter(filt) else 'LW'}): {len(sub)} units"))
    drawn = set()
    for _filt, g in sorted((tiles or {}).items()):
        if g.channel in drawn:  # the filters of a channel share its grid
            continue
        drawn.add(g.channel)
        lw = "-" if g.channel == "SHORT" else "--"
        for t in g.tiles:
            cx = [t.cx0 - 0.5, t.cx1 - 0.5, t.cx1 - 0.5, t.cx0 - 0.5, t.cx0 - 0.5]
            cy = [t.cy0 - 0.5, t.cy0 - 0.5, t.cy1 - 0.5, t.cy1 - 0.5, t.cy0 - 0.5]
            ex, ey = footprint.tangent_offsets(*g.pixel_to_sky(cx, cy), ra0, dec0)
            ax.plot(ex / scale, ey / scale, color="k", lw=0.9, ls=lw, alpha=0.7)
            if len(g.tiles) <= 200:
                ax.text(float(np.mean(ex[:4])) / scale, float(np.mean(ey[:4])) / scale,
                        t.tile_id if g.channel == "SHORT" else "", fontsize=6, ha="center", va="center")
        handles.append(Line2D([], [], color="k", ls=lw, lw=1,
                              label=f"{'SW' if g.channel == 'SHORT' else 'LW'} tile cores: {len(g.tiles)} "
                                    f"at {g.pixel_scale:g}\"/px"))
    if len(units) <= 500:  # beyond that the markers hide the outlines
        px, py = footprint.tangent_offsets([u.ra for u in units], [u.dec for u in units], ra0, dec0)
        ax.plot(px / scale, py / scale, "k+", ms=4, alpha=0.6)
        handles.append(Line2D([], [], color="k", marker="+", ls="none", label="aperture reference points"))
    allxy = np.vstack([p for p, _ in _outlines(units, ra0, dec0)]) / scale
    pad = 0.08 * (allxy.max() - allxy.min())
    ax.set_xlim(allxy[:, 0].max() + pad, allxy[:, 0].min() - pad)  # East to the left, as on the sky
    ax.set_ylim(allxy[:, 1].min() - pad, allxy[:, 1].max() + pad)
    ax.set_aspect("equal")
    ax.set_xlabel(f"East offset ({unit_name}) from RA {ra0:.5f}")
    ax.set_ylabel(f"North offset ({unit_name}) from Dec {dec0:.5f}")
    n_vis = len({(u.observation, u.visit) for u in units})
    ax.set_title(f"{cfg.survey.name}: {len(units)} units, {n_vis} visits, "
                 f"{', '.join(sorted({u.subarray for u in units}))}, PA_V3 {cfg.pointings.pa_v3:g}")
    ax.legend(handles=handles, loc="upper left", fontsize=8, framealpha=0.85)
    ax.grid(alpha=0.25)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    plt.close(fig)
    return path


def _span(units: list[WorkUnit], ra0: float, dec0: float) -> float:
    x, y = footprint.tangent_offsets([u.ra for u in units], [u.dec for u in units], ra0, dec0)
    return float(max(np.ptp(x), np.ptp(y)))
