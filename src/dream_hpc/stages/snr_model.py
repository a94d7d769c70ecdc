"""Predicted S/N of input sources on a mosaic: how bright the science check expects each to be measured.

Independent of whether a source was detected, so completeness is not biased by detection. Split from
stages/science.py so the galaxy model (stages/galaxy_check.py) uses the same prediction.
"""

from __future__ import annotations

import math

import numpy as np


def aperture_fraction(radius_px: float, psf_half_light_px: float, source_half_light_px: np.ndarray,
                      ee_point: float) -> np.ndarray:
    """Fraction of a source's light inside `radius_px`, given its (circularized) half-light radius.

    The PSF-convolved source is approximated as a Gaussian whose half-light radius adds the PSF's
    and the source's in quadrature; the result is scaled so a point source gets the catalog's own
    encircled energy `ee_point` (which carries the real PSF's wings).
    """
    def gauss_ee(half_light: np.ndarray) -> np.ndarray:
        return 1.0 - 2.0 ** (-(radius_px / half_light) ** 2)

    total = np.hypot(psf_half_light_px, np.asarray(source_half_light_px, float))
    return ee_point * gauss_ee(total) / gauss_ee(np.asarray(psf_half_light_px, float))


def predicted_snr(mag: np.ndarray, x: np.ndarray, y: np.ndarray, err: np.ndarray, pixar_sr: float,
                  radius_px: float, fraction: np.ndarray) -> np.ndarray:
    """S/N of sources of AB `mag` in a `radius_px` aperture holding `fraction` of their light.

    Signal: the input flux converted to the mosaic's MJy/sr summed over pixels; noise: the
    mosaic's ERR array added in quadrature over the same aperture at the source position.
    Independent of whether the source was detected, so completeness is not biased by it.
    """
    ny, nx = err.shape
    r = int(math.ceil(radius_px))
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    inside = xx**2 + yy**2 <= radius_px**2
    snr = np.full(len(mag), np.nan)
    signal = 3631.0 * 10 ** (-0.4 * np.asarray(mag, float)) * 1e-6 / pixar_sr * np.asarray(fraction, float)
    for k, (xc, yc) in enumerate(zip(np.rint(x).astype(int), np.rint(y).astype(int), strict=True)):
        if not (r <= xc < nx - r and r <= yc < ny - r):
            continue
        box = err[yc - r:yc + r + 1, xc - r:xc + r + 1][inside]
        if not np.all(np.isfinite(box)) or np.any(box <= 0):
            continue  # on the mosaic edge or a masked pixel: no reliable prediction
        snr[k] = signal[k] / math.sqrt(float(np.sum(box**2)))
    return snr
