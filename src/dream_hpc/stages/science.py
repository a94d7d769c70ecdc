"""Science check: does the final Image3 catalog give back the input catalog it was simulated from?

Per filter: input sources on the mosaic are matched on the sky to the `_cat.ecsv` sources. For
bright (predicted S/N > 20), isolated sources (no neighbour within 1" brighter than 2 mag fainter
than the source) it reports completeness, astrometric offsets in mosaic pixels and the median
magnitude residual. A residual that is off means the simulation and the calibration references
disagree (zeropoints, PSF, aperture corrections): a bug to find, not a tolerance to widen.

`measure` gives the per-source arrays of one image (a mosaic, or one tile of a tiled mosaic:
stages/tile_science.py), `judge` the numbers and verdicts from them. One concern, the check and
its figure, which is why it is over 400 lines.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# What "passing" means (also asserted by tests/stages/test_science.py).
MIN_COMPLETENESS = 0.90
MAX_OFFSET_PX = 0.1  # |median offset| per axis, mosaic pixels
MAX_SCATTER_PX = 0.3  # robust scatter per axis, mosaic pixels
MAX_MAG_RESIDUAL = 0.1  # |median(output - input)|, AB mag
SNR_MIN = 20.0
MATCH_RADIUS_ARCSEC = 0.1
ISOLATION_RADIUS_ARCSEC = 1.0
ISOLATION_DMAG = 2.0
EE_FRACTION = 0.7  # the aperture used for the predicted S/N encloses this fraction of a point source
MIN_STARS_FOR_HEADLINE = 5  # fewer matched stars than this: the residual uses all sources


# --- the input catalog -----------------------------------------------------------------------
def input_catalog(cfg: Any, run_root: Path | None = None) -> Any:
    """The input catalog's usable rows (`dream_hpc.catalog.Sources`: ra, dec, is_star, mags[filter]):
    those of the run's prepared catalog (already cut to the survey footprint) when there is one."""
    from dream_hpc.catalog import prepared, reader

    if run_root is not None and (Path(run_root) / prepared.RUN_FILE).is_file():
        return prepared.open_prepared(Path(run_root) / prepared.RUN_FILE).everything().sources
    return reader.load_catalog(cfg).sources


def on_image(wcs: Any, shape: tuple[int, ...], ra: Any, dec: Any, border: float = 0.0) -> np.ndarray:
    """Which (ra, dec) fall on an image of `shape` through its gwcs, `border` pixels inside the edge."""
    x, y = wcs.world_to_pixel_values(np.asarray(ra, float), np.asarray(dec, float))
    x, y = np.asarray(x), np.asarray(y)
    ny, nx = shape[-2:]
    return (np.isfinite(x) & np.isfinite(y) & (x >= border - 0.5) & (y >= border - 0.5)
            & (x <= nx - 0.5 - border) & (y <= ny - 0.5 - border))


def _tangent(ra: Any, dec: Any, ra0: float, dec0: float) -> np.ndarray:
    """Gnomonic offsets (arcsec) about (ra0, dec0): flat enough for a mosaic-sized field."""
    ra, dec = np.radians(np.asarray(ra, float)), np.radians(np.asarray(dec, float))
    a0, d0 = math.radians(ra0), math.radians(dec0)
    cosc = np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    xi = np.cos(dec) * np.sin(ra - a0) / cosc
    eta = (np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return np.degrees(np.column_stack([xi, eta])) * 3600.0


def isolated(xy: np.ndarray, mags: np.ndarray, subset: np.ndarray, all_xy: np.ndarray, all_mags: np.ndarray,
             radius: float = ISOLATION_RADIUS_ARCSEC, dmag: float = ISOLATION_DMAG) -> np.ndarray:
    """True where no other source within `radius` is brighter than (own mag + dmag)."""
    from scipy.spatial import cKDTree

    tree = cKDTree(all_xy)
    out = np.ones(len(subset), bool)
    for k, i in enumerate(subset):
        for j in tree.query_ball_point(xy[i], radius):
            d = np.hypot(*(all_xy[j] - xy[i]))
            if d > 1e-6 and all_mags[j] < mags[i] + dmag:
                out[k] = False
                break
    return out


def robust_scatter(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    if values.size == 0:
        return float("nan")
    return float(1.4826 * np.median(np.abs(values - np.median(values))))


# --- predicted S/N (stages/snr_model.py) ------------------------------------------------------
from dream_hpc.stages.snr_model import aperture_fraction, predicted_snr  # noqa: E402 (the check's own names)


def _apertures(cat_meta: dict[str, Any], pixel_arcsec: float) -> tuple[float, float, float]:
    """(largest EE aperture radius px, its encircled energy, PSF half-light radius px).

    source_catalog records `aperture_ee` (percent) and `aperture_radii` (mosaic pixels) under
    `aperture_params`; without them a 0.1" aperture holding EE_FRACTION is assumed.
    """
    params = cat_meta.get("aperture_params", cat_meta)
    ee = np.atleast_1d(np.asarray(params.get("aperture_ee", []), float))
    radii = np.atleast_1d(np.asarray(params.get("aperture_radii", []), float))
    if ee.size >= 2 and ee.size == radii.size and np.all(radii > 0):
        k = int(np.argmax(ee))
        half = float(np.interp(50.0, ee, radii))
        return float(radii[k]), float(ee[k]) / 100.0, half
    radius = max(2.0, 0.1 / pixel_arcsec)
    return radius, EE_FRACTION, radius / 1.5


# --- the check -------------------------------------------------------------------------------
def check_filter(cfg: Any, filter_: str, i2d: Path, cat: Path, run_root: Path | None = None) -> dict[str, Any]:
    """Match the Image3 catalog of one filter to the input catalog; numbers for summary.json."""
    from astropy.table import Table

    filt = filter_.upper()
    sky = input_catalog(cfg, run_root)
    if filt not in sky.mags:
        raise ValueError(f"input catalog has no {filt} magnitudes (check catalog.columns.mag)")
    out = Table.read(cat, format="ascii.ecsv")
    return judge(measure(cfg, filt, sky, i2d, out), len(out), i2d)


@dataclass
class Measured:
    """Per input source on one image (a mosaic or a tile): the science check's arrays (`points`), and
    the image's aperture and pixel facts. `judge` turns one (or several tiles' concatenated) into the
    check; sources judged on their own only need their points, so tiles can be measured one at a time."""

    filter: str
    points: dict[str, np.ndarray]
    radius_px: float
    ee: float
    psf_half: float
    pixel_arcsec: float
    galaxy_model: str | None  # the aperture model's description (None: the Gaussian approximation)
    n_output: int
    not_listed: Counted | None = None  # sources dropped from `points` but counted (stages/tile_science.py)


@dataclass
class Counted:
    """Input sources left out of `points` because they can change no verdict (neither judged nor matched),
    kept as counts on the completeness tables' magnitude bins: bin index = floor(mag / width)."""

    n: int = 0
    by_bin: dict[int, int] = field(default_factory=dict)  # all of them (completeness_by_mag "n")
    n_isolated_galaxies: int = 0  # isolated galaxies with a predicted S/N among them
    galaxies_by_bin: dict[int, int] = field(default_factory=dict)  # those, on galaxy_check's bins


def measure(cfg: Any, filt: str, sky: Any, i2d: Path, out: Any) -> Measured:
    """The per-source arrays of the check for the input sources `sky` on image `i2d` with its catalog
    `out` (an astropy Table). Isolation is judged against every source of `sky`, so `sky` must reach
    ISOLATION_RADIUS_ARCSEC beyond the sources that will be judged."""
    from stdatamodels.jwst import datamodels

    with datamodels.open(i2d) as model:
        wcs = model.meta.wcs
        shape = model.data.shape
        err = np.array(model.err, dtype=float)
        has_data = np.asarray(model.wht) > 0  # a mask, not a float64 copy: a tile can be 65 Mpix
        pixar_sr = float(model.meta.photometry.pixelarea_steradians)
        pixel_arcsec = math.degrees(math.sqrt(pixar_sr)) * 3600.0
        pixel_ratio = float(getattr(model.meta.resample, "pixel_scale_ratio", None) or 1.0)

    mags_all = np.asarray(sky.mags[filt], float)
    ra_all, dec_all = np.asarray(sky.ra, float), np.asarray(sky.dec, float)
    good = np.isfinite(mags_all) & np.isfinite(ra_all) & np.isfinite(dec_all)
    radius_px, ee, psf_half = _apertures(dict(out.meta), pixel_arcsec)
    on = good & on_image(wcs, shape, ra_all, dec_all, border=radius_px + 2)
    idx = np.flatnonzero(on)
    x_in, y_in = (np.asarray(v) for v in wcs.world_to_pixel_values(ra_all[idx], dec_all[idx]))
    # only where the mosaic has data (weight > 0 at the source position)
    xi, yi = np.rint(x_in).astype(int), np.rint(y_in).astype(int)
    covered = has_data[yi, xi]
    idx, x_in, y_in = idx[covered], x_in[covered], y_in[covered]

    # tangent point: the mosaic centre (a median of RAs would break across RA = 0)
    ra0, dec0 = (float(v) for v in wcs.pixel_to_world_values((shape[-1] - 1) / 2.0, (shape[-2] - 1) / 2.0))
    xy_all = _tangent(ra_all[good], dec_all[good], ra0, dec0)
    mags_good = mags_all[good]
    pos_in_good = np.cumsum(good) - 1  # index into the `good` arrays
    # galaxies spread their light: circularized half-light radius in mosaic pixels (0 for stars)
    size_px = np.where(sky.is_star[idx], 0.0,
                       np.asarray(sky.radius, float)[idx] * np.sqrt(np.asarray(sky.axis_ratio, float)[idx])) / pixel_arcsec
    fraction = aperture_fraction(radius_px, psf_half, size_px, ee)
    # galaxies: what the aperture measures of each rendered profile; judged apart (stages/galaxy_check.py)
    from dream_hpc.stages.galaxy_check import model_galaxies

    gal_model = model_galaxies(cfg, filt, dict(out.meta), sky.take(idx), mags_all[idx], (x_in, y_in, err),
                               (pixar_sr, pixel_arcsec, pixel_ratio), radius_px, ee, SNR_MIN)
    fraction = fraction if gal_model is None else np.where(np.isfinite(gal_model.fraction), gal_model.fraction, fraction)
    snr = predicted_snr(mags_all[idx], x_in, y_in, err, pixar_sr, radius_px, fraction)
    bright = np.isfinite(snr) & (snr > SNR_MIN)
    iso = isolated(xy_all, mags_good, pos_in_good[idx], xy_all, mags_good) if len(idx) else np.zeros(0, bool)
    sample = bright & iso

    # nearest output source on the sky
    n_out = len(out)
    matched = np.zeros(len(idx), bool)
    dx = np.full(len(idx), np.nan)
    dy = np.full(len(idx), np.nan)
    mag_total = np.full(len(idx), np.nan)
    snr_measured = np.full(len(idx), np.nan)
    mag_iso = np.full(len(idx), np.nan)
    if n_out and len(idx):
        from scipy.spatial import cKDTree

        sc = out["sky_centroid"]
        out_xy = _tangent(sc.ra.deg, sc.dec.deg, ra0, dec0)
        dist, j = cKDTree(out_xy).query(xy_all[pos_in_good[idx]], k=1)
        matched = dist <= MATCH_RADIUS_ARCSEC
        jm = j[matched]
        dx[matched] = np.asarray(out["xcentroid"], float)[jm] - x_in[matched]
        dy[matched] = np.asarray(out["ycentroid"], float)[jm] - y_in[matched]
        mag_total[matched] = _column(out, "aper_total_abmag")[jm]
        mag_iso[matched] = _column(out, "isophotal_abmag")[jm]
        ap = f"aper{int(round(ee * 100))}"
        if f"{ap}_flux" in out.colnames:
            snr_measured[matched] = _column(out, f"{ap}_flux")[jm] / _column(out, f"{ap}_flux_err")[jm]

    is_star = np.asarray(sky.is_star, bool)[idx]
    points = {"mag_in": mags_all[idx], "snr": snr, "sample": sample, "matched": matched, "iso": iso,
              "is_star": is_star, "resid_total": mag_total - mags_all[idx], "dx": dx, "dy": dy,
              "row": np.asarray(sky.row)[idx], "ra": ra_all[idx], "dec": dec_all[idx],
              "mag_total": mag_total, "mag_iso": mag_iso, "size_px": size_px, "snr_measured": snr_measured,
              "x": x_in, "y": y_in,
              **({} if gal_model is None else {"bias": gal_model.bias, "bias_ideal": gal_model.bias_ideal_profile})}
    return Measured(filt, points, radius_px, ee, psf_half, pixel_arcsec,
                    None if gal_model is None else gal_model.model, n_out)


def judge(m: Measured, n_output: int, i2d: Path | None) -> dict[str, Any]:
    """The check's numbers and verdicts from measured sources (one image's, or tiles' concatenated)."""
    p, counted = m.points, m.not_listed or Counted()
    mag_in, snr, sample, matched, is_star = p["mag_in"], p["snr"], p["sample"], p["matched"], p["is_star"]
    rec = sample & matched
    rec_stars = rec & is_star
    snr_ratio = p["snr_measured"] / snr
    resid_total = p["resid_total"]
    resid_iso = p["mag_iso"] - mag_in
    stars = rec & is_star & np.isfinite(resid_total)
    if stars.sum() >= MIN_STARS_FOR_HEADLINE:
        head_sel, population = stars, "stars"
    else:
        head_sel, population = rec & np.isfinite(resid_total), "all"
    completeness = float(rec.sum() / sample.sum()) if sample.sum() else float("nan")
    dx, dy = p["dx"], p["dy"]
    result = {
        "filter": m.filter,
        "n_output_sources": int(n_output),
        "n_input_on_mosaic": int(len(mag_in) + counted.n),
        "n_bright_isolated": int(sample.sum()),
        "n_recovered": int(rec.sum()),
        "completeness": completeness,
        "snr_min": SNR_MIN,
        "snr_basis": (f"predicted from the input AB magnitude and size and the mosaic ERR array, in the catalog's "
                      f"{m.radius_px:.2f}-pixel aperture (holding {m.ee:.0%} of a point source's light; galaxies: "
                      + ("their rendered profiles, local sky subtracted)" if m.galaxy_model else "a Gaussian model)")),
        "snr_measured_over_predicted_stars": _median(snr_ratio[rec_stars]),
        "match_radius_arcsec": MATCH_RADIUS_ARCSEC,
        "missed": _missed(sample & ~matched, mag_in, snr, is_star, p["size_px"] * m.pixel_arcsec),
        "isolation": f"no neighbour within {ISOLATION_RADIUS_ARCSEC}\" brighter than own mag + {ISOLATION_DMAG}",
        "pixel_arcsec": m.pixel_arcsec,
        "offset_px": {
            "median_dx": _median(dx[rec]), "median_dy": _median(dy[rec]),
            "scatter_dx": robust_scatter(dx[rec]), "scatter_dy": robust_scatter(dy[rec]),
            "median_r": _median(np.hypot(dx[rec], dy[rec])),
        },
        "mag_residual": {
            "column": "aper_total_abmag", "population": population, "n": int(head_sel.sum()),
            "median": _median(resid_total[head_sel]), "scatter": robust_scatter(resid_total[head_sel]),
            "stars_aper_total": _stats(resid_total[stars]),
            "galaxies_aper_total": _stats(resid_total[rec & ~is_star]),
            "galaxies_isophotal": _stats(resid_iso[rec & ~is_star]),
        },
    }
    result["completeness_by_mag"] = completeness_by_mag(mag_in, matched, sample, counted=counted.by_bin)
    result["passed"] = passed(result)
    result["_i2d"] = Path(i2d) if i2d else None  # for the checks that read the products again (not in summary.json)
    result["_points"] = p  # per-source arrays for the figure and the matched catalog (not written to summary.json)
    from dream_hpc.stages.galaxy_check import galaxy_report

    result["galaxies"] = galaxy_report(p, p["iso"], m.radius_px, m.psf_half, SNR_MIN, MIN_COMPLETENESS,
                                       MAX_MAG_RESIDUAL, m.galaxy_model,
                                       counted=(counted.n_isolated_galaxies, counted.galaxies_by_bin))
    for key, ok in result["galaxies"]["passed"].items():
        if ok is not None:
            result["passed"][f"galaxy_{key}"] = ok
    return result


def completeness_by_mag(mag: np.ndarray, matched: np.ndarray, sample: np.ndarray, width: float = 0.5,
                        counted: dict[int, int] | None = None) -> list[dict[str, Any]]:
    """Recovered fraction of the input sources on the mosaic per `width`-mag bin of input magnitude
    (all of them, and the bright isolated sample the headline completeness uses): the depth curve.
    Bins are [k width, (k + 1) width); `counted`: bin k -> further sources in it, neither matched nor
    in the sample (sources a tiled check counted instead of keeping)."""
    mag = np.asarray(mag, float)
    ok = np.isfinite(mag)
    which = np.floor(mag[ok] / width).astype(np.int64)
    n = dict(zip(*np.unique(which, return_counts=True), strict=True))
    for k, c in (counted or {}).items():
        n[k] = n.get(k, 0) + c
    if not n:
        return []
    rows = []
    for k in sorted(n):
        inside = np.zeros(mag.size, bool)
        inside[ok] = which == k
        rows.append({"mag_lo": round(float(k * width), 3), "mag_hi": round(float((k + 1) * width), 3),
                     "n": int(n[k]), "n_matched": int((inside & matched).sum()),
                     "n_sample": int((inside & sample).sum()),
                     "n_sample_matched": int((inside & sample & matched).sum())})
    return rows


def _missed(sel: np.ndarray, mag: np.ndarray, snr: np.ndarray, is_star: np.ndarray,
            size_arcsec: np.ndarray, limit: int = 10) -> list[dict[str, Any]]:
    """The bright isolated sources that were not recovered (the first `limit`, brightest first)."""
    out = []
    for k in np.flatnonzero(sel)[np.argsort(mag[sel])][:limit]:
        out.append({"mag": round(float(mag[k]), 3), "snr_predicted": round(float(snr[k]), 1),
                    "kind": "star" if is_star[k] else "galaxy", "half_light_arcsec": round(float(size_arcsec[k]), 3)})
    return out


def _column(table: Any, name: str) -> np.ndarray:
    col = table[name]
    data = np.ma.filled(np.ma.asarray(getattr(col, "value", col), dtype=float), np.nan)
    return np.asarray(data, float)


def _median(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def _stats(values: np.ndarray) -> dict[str, float]:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return {"n": int(values.size), "median": _median(values), "scatter": robust_scatter(values)}


def offset_limit_px(fit_error_mas: float | None, pixel_arcsec: float) -> float:
    """The |median offset| a mosaic may show per axis: the pipeline's own allowance (MAX_OFFSET_PX, drizzle and
    centroids) and, in quadrature, 3 sigma of the absolute alignment's own error (`fit_error_mas` per axis,
    stages/astrometry_truth.absolute_fit_error_mas): an alignment is no truer than its reference catalog.
    The demo's F150W fit (37 HST-like references of 3-10 mas, RMS 10 mas) leaves 1.2 mas = 0.04 px per axis,
    so a 3.6 mas (0.12 px) offset is a 3-sigma draw of the references, not a pipeline error."""
    err_px = (fit_error_mas or 0.0) / (pixel_arcsec * 1000.0)
    return math.hypot(MAX_OFFSET_PX, 3.0 * err_px)


def astrometry_passed(r: dict[str, Any], limit_px: float = MAX_OFFSET_PX) -> bool:
    off = r["offset_px"]
    return bool(abs(off["median_dx"]) <= limit_px and abs(off["median_dy"]) <= limit_px
                and off["scatter_dx"] <= MAX_SCATTER_PX and off["scatter_dy"] <= MAX_SCATTER_PX)


def passed(r: dict[str, Any]) -> dict[str, bool]:
    return {
        "completeness": bool(r["completeness"] >= MIN_COMPLETENESS),
        "astrometry": astrometry_passed(r),
        "photometry": bool(abs(r["mag_residual"]["median"]) <= MAX_MAG_RESIDUAL),
    }


def public(result: dict[str, Any]) -> dict[str, Any]:
    """The result without per-source arrays, NaN as null: what goes into summary.json."""

    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items() if not str(k).startswith("_")}
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    return clean(result)


# --- figure ----------------------------------------------------------------------------------
def figure(results: list[dict[str, Any]], png: Path) -> None:
    """Per filter: magnitude residual vs input magnitude, and the astrometric offsets."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from dream_hpc.core.rundir import atomic_path

    n = max(len(results), 1)
    fig, axes = plt.subplots(n, 2, figsize=(11, 4.2 * n), squeeze=False)
    for row, r in zip(axes, results, strict=False):
        p = r["_points"]
        rec = p["sample"] & p["matched"]
        other = p["matched"] & ~p["sample"]
        ax = row[0]
        ax.scatter(p["mag_in"][other], p["resid_total"][other], s=6, c="0.7", label="matched (faint or crowded)")
        for sel, colour, label in ((rec & p["is_star"], "tab:blue", "bright isolated stars"),
                                   (rec & ~p["is_star"], "tab:orange", "bright isolated galaxies")):
            ax.scatter(p["mag_in"][sel], p["resid_total"][sel], s=14, c=colour, label=label)
        med = r["mag_residual"]["median"]
        ax.axhline(0, color="k", lw=0.8)
        for s in (-MAX_MAG_RESIDUAL, MAX_MAG_RESIDUAL):
            ax.axhline(s, color="k", lw=0.5, ls=":")
        if math.isfinite(med):
            ax.axhline(med, color="tab:red", lw=1, label=f"median ({r['mag_residual']['population']}) {med:+.3f}")
        ax.set_ylim(-1, 1)
        ax.set_xlabel(f"input {r['filter']} [AB mag]")
        ax.set_ylabel("aper_total_abmag - input [mag]")
        ax.set_title(f"{r['filter']}: completeness {r['completeness']:.0%} of {r['n_bright_isolated']} "
                     f"(S/N>{SNR_MIN:.0f}, isolated)", fontsize=9)
        ax.legend(fontsize=7, loc="lower left")
        ax = row[1]
        ax.scatter(p["dx"][other], p["dy"][other], s=6, c="0.7")
        ax.scatter(p["dx"][rec], p["dy"][rec], s=14, c="tab:blue")
        off = r["offset_px"]
        ax.plot([off["median_dx"]], [off["median_dy"]], "r+", ms=14, mew=2,
                label=f"median ({off['median_dx']:+.3f}, {off['median_dy']:+.3f}) px")
        lim = max(0.5, MATCH_RADIUS_ARCSEC / r["pixel_arcsec"])
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
        ax.axhline(0, color="k", lw=0.5)
        ax.axvline(0, color="k", lw=0.5)
        ax.set_xlabel("x offset (output - input) [mosaic px]")
        ax.set_ylabel("y offset [mosaic px]")
        ax.set_title(f"{r['filter']}: scatter ({off['scatter_dx']:.3f}, {off['scatter_dy']:.3f}) px", fontsize=9)
        ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
