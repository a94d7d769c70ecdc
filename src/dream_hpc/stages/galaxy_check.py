"""Galaxies judged on their own: completeness against input magnitude and photometry against a bias model.

A DREaM survey is about galaxies, yet a check on "all bright sources" is a check on stars wherever
stars dominate the bright end. Here, per filter, from the science check's matched sources:
- completeness of isolated galaxies vs input total magnitude, and the magnitudes where it falls
  through 90% and 50% (interpolated between 0.5-mag bins);
- completeness of isolated galaxies with predicted S/N > 20 (gated once enough are judged);
- `aper_total_abmag` - input total magnitude, against the expected bias of that measurement:
  source_catalog's aper_total is the largest aperture, minus the local sky of an annulus, corrected
  as for a point source, so a galaxy is measured faint by -2.5 log10(M_gal / M_point), M being that
  measurement applied to the galaxy's PSF-convolved Sersic profile as Mirage rendered it
  (stages/galaxy_model.py; a Gaussian approximation when the kit's PSF or the annulus is unknown).
  The residual after the model is what is judged, never a wider tolerance.
Too few galaxies to judge (< MIN_GALAXIES) is said, not passed silently.
"""

from __future__ import annotations

from typing import Any

import numpy as np

MIN_GALAXIES = 20  # judged (S/N > 20, isolated) galaxies needed before the galaxy verdicts count
BIN_MAG = 0.5
MIN_PER_BIN = 3


def completeness_curve(mag: np.ndarray, found: np.ndarray, counted: dict[int, int] | None = None) -> dict[str, Any]:
    """Binned completeness and the magnitudes of 90% and 50% completeness (None when not reached).
    Bins are [k BIN_MAG, (k + 1) BIN_MAG); `counted`: bin k -> further sources in it, none found."""
    mag, found = np.asarray(mag, float), np.asarray(found, bool)
    ok = np.isfinite(mag)
    mag, found = mag[ok], found[ok]
    which = np.floor(mag / BIN_MAG).astype(np.int64)
    n = dict(zip(*np.unique(which, return_counts=True), strict=True))
    for k, c in (counted or {}).items():
        n[k] = n.get(k, 0) + c
    if not n:
        return {"bins": [], "mag90": None, "mag50": None}
    centres, frac, counts = [], [], []
    for k in range(min(n), max(n) + 1):
        if n.get(k, 0) >= MIN_PER_BIN:
            centres.append(k * BIN_MAG + BIN_MAG / 2)
            frac.append(float(found[which == k].sum() / n[k]))
            counts.append(int(n[k]))

    def crossing(level: float) -> float | None:
        for k in range(len(frac)):
            if frac[k] < level:
                if k == 0:
                    return None  # incomplete already at the bright end
                f0, f1 = frac[k - 1], frac[k]
                return float(centres[k - 1] + (f0 - level) / (f0 - f1) * (centres[k] - centres[k - 1]))
        return None  # never fell below: complete over the range probed

    return {"bins": [{"mag": c, "completeness": f, "n": n} for c, f, n in zip(centres, frac, counts, strict=True)],
            "mag90": crossing(0.9), "mag50": crossing(0.5)}


def expected_aper_total_bias(size_px: np.ndarray, radius_px: float, psf_half_px: float) -> np.ndarray:
    """Expected aper_total_abmag - true total for sources of circularized half-light `size_px`."""
    def gauss_ee(half: np.ndarray) -> np.ndarray:
        return 1.0 - 2.0 ** (-(radius_px / half) ** 2)

    total = np.hypot(psf_half_px, np.asarray(size_px, float))
    return -2.5 * np.log10(gauss_ee(total) / gauss_ee(np.asarray(psf_half_px, float)))


def model_galaxies(cfg: Any, filt: str, cat_meta: dict[str, Any], src: Any, mag: np.ndarray,
                   where: tuple[np.ndarray, np.ndarray, np.ndarray], pixels: tuple[float, float, float],
                   radius_px: float, ee: float, snr_min: float) -> Any:
    """The aperture model (stages/galaxy_model.py) for the galaxies among the input sources `src` (on the
    mosaic at `where` = (x, y, its ERR array); `pixels` = (pixar_sr, arcsec, mosaic/detector scale)) that
    could reach `snr_min` (those a point source of their magnitude would: a galaxy's aperture holds less);
    None when the catalog's sky annulus or the kit's PSF library for the filter is not known."""
    from dream_hpc.stages import galaxy_model
    from dream_hpc.stages.snr_model import predicted_snr

    params = cat_meta.get("aperture_params", cat_meta)
    pixar_sr, pixel_arcsec, pixel_ratio = pixels
    x, y, err = where
    if "bkg_aperture_inner_radius" not in params:
        return None
    psf, source = galaxy_model.filter_psf(cfg, filt, pixel_ratio)
    if psf is None:
        return None
    ap = galaxy_model.Aperture(radius_px, float(params["bkg_aperture_inner_radius"]),
                               float(params["bkg_aperture_outer_radius"]))
    snr_point = predicted_snr(mag, x, y, err, pixar_sr, radius_px, np.full(len(mag), ee))
    candidates = ~np.asarray(src.is_star, bool) & np.isfinite(snr_point) & (snr_point > snr_min)
    return galaxy_model.predict(galaxy_model.ApertureModel(psf, ap), candidates, mag,
                                np.asarray(src.radius, float) / pixel_arcsec, np.asarray(src.sersic, float),
                                np.asarray(src.axis_ratio, float), galaxy_model.pixel_sigma_at(err, x, y), pixar_sr,
                                ee, source)


def galaxy_report(points: dict[str, np.ndarray], iso: np.ndarray, radius_px: float, psf_half_px: float,
                  snr_min: float, min_completeness: float, max_mag_residual: float,
                  bias_model: str | None = None, counted: tuple[int, dict[int, int]] = (0, {})) -> dict[str, Any]:
    """The galaxies' section of the science check (see the module docstring). `points["bias"]`, when
    there, is the modelled aper_total bias per source (else the Gaussian approximation here).
    `counted`: (number, bin -> number) of further isolated galaxies with a predicted S/N, none judged
    nor found, that a tiled check counted instead of keeping in `points`."""
    gal = ~np.asarray(points["is_star"], bool)
    covered = np.isfinite(points["snr"])
    iso_gal = gal & iso & covered
    curve = completeness_curve(points["mag_in"][iso_gal], points["matched"][iso_gal], counted[1])
    judged = iso_gal & (points["snr"] > snr_min)
    found = judged & points["matched"]
    resid = points["resid_total"]
    if "bias" in points:
        bias = np.asarray(points["bias"], float)
        ideal = np.asarray(points.get("bias_ideal", np.full(bias.size, np.nan)), float)
    else:
        bias = expected_aper_total_bias(points["size_px"], radius_px, psf_half_px)
        ideal = np.full(bias.size, np.nan)
        bias_model = ("Gaussian approximation of the PSF-convolved profile inside the aperture (no PSF library "
                      "or sky annulus known)")
    phot = found & np.isfinite(resid) & np.isfinite(bias)
    after = resid[phot] - bias[phot]
    n = int(judged.sum())
    completeness = float(found.sum() / n) if n else float("nan")
    med_after = float(np.median(after)) if after.size else float("nan")
    enough = n >= MIN_GALAXIES
    return {
        "n_isolated_on_mosaic": int(iso_gal.sum()) + int(counted[0]), "n_judged": n, "n_recovered": int(found.sum()),
        "completeness_snr_gt_min": completeness, "completeness_curve": curve,
        "aper_total_residual": {"n": int(phot.sum()),
                                "median_raw": float(np.median(resid[phot])) if phot.any() else float("nan"),
                                "median_expected_bias": float(np.median(bias[phot])) if phot.any() else float("nan"),
                                "median_after_bias_model": med_after,
                                "scatter_after_bias_model": _scatter(after),
                                "bias_model": bias_model,
                                # the same measurement on the catalog's own profile: how far Mirage's
                                # rendering (a pixel-centre-sampled Sersic) is from it
                                "median_expected_bias_catalog_profile": _median(ideal[phot])},
        "judged": enough,
        "verdict": ("judged" if enough else f"too few galaxies to judge ({n} < {MIN_GALAXIES} at S/N > {snr_min:g}, "
                                            "isolated): not part of the pass/fail"),
        "passed": {"completeness": bool(completeness >= min_completeness) if enough else None,
                   "photometry": bool(abs(med_after) <= max_mag_residual) if enough else None},
    }


def _median(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(np.median(values)) if values.size else float("nan")


def _scatter(values: np.ndarray) -> float:
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    return float(1.4826 * np.median(np.abs(values - np.median(values)))) if values.size else float("nan")
