"""The synthetic PSF (Mirage's gridded library) and the aperture corrections measured on it.

The PSF is a Moffat profile (beta = 1.6: a core with NIRCam-like wings) with the filter's FWHM,
integrated over a pixel (an "effective PSF", what photutils and Mirage expect), tapered to zero
inside the stamp Mirage evaluates, and normalised so sum / oversampling^2 = 1: every count
Mirage assigns to a star lands on the detector. The APCORR table is measured on that same PSF
after detector sampling and drizzling, with the apertures jwst's source_catalog uses, so the
catalog's aperture-corrected total flux returns the input flux.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OVERSAMPLE = 4
STAMP = 41  # detector pixels on a side (odd: the star sits on the central pixel)
MIRAGE_ROW_PADDING = 4  # Mirage evaluates only STAMP - 4 pixels: keep the PSF inside that
TAPER = (13.0, 16.0)  # px: cosine taper from the first radius to zero at the second
MOFFAT_BETA = 1.6  # wings like NIRCam: EE(0.1") ~ 0.75, EE(0.2") ~ 0.9 at F150W
EE_FRACTIONS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
SKY_ANNULUS = (TAPER[1] + 1.0, TAPER[1] + 9.0)  # px: beyond the PSF, so the local sky is unbiased

assert TAPER[1] < (STAMP - MIRAGE_ROW_PADDING) / 2 - 1, "PSF must vanish inside Mirage's evaluated core"


@dataclass(frozen=True)
class PsfModel:
    fwhm_pix: float
    data: np.ndarray  # (n, n) oversampled effective PSF, sum = OVERSAMPLE**2


def moffat_alpha(fwhm: float, beta: float = MOFFAT_BETA) -> float:
    return fwhm / (2.0 * math.sqrt(2.0 ** (1.0 / beta) - 1.0))


def effective_psf(fwhm_pix: float, supersample: int = 8) -> PsfModel:
    """The oversampled, pixel-integrated, tapered and normalised PSF (centre at the array centre)."""
    n = STAMP * OVERSAMPLE
    step = 1.0 / (OVERSAMPLE * supersample)  # fine grid, detector pixels
    box = OVERSAMPLE * supersample  # fine samples per detector pixel
    # fine grid covering every sample +- half a detector pixel
    m = n * supersample + box
    u = (np.arange(m) - (m - 1) / 2.0) * step
    r2 = u[:, None] ** 2 + u[None, :] ** 2
    alpha = moffat_alpha(fwhm_pix)
    fine = (1.0 + r2 / alpha**2) ** (-MOFFAT_BETA)
    # box-average over one detector pixel (separable running mean via cumulative sums)
    c = np.cumsum(np.pad(fine, ((1, 0), (0, 0))), axis=0)
    fine = (c[box:] - c[:-box]) / box
    c = np.cumsum(np.pad(fine, ((0, 0), (1, 0))), axis=1)
    fine = (c[:, box:] - c[:, :-box]) / box
    # sample at the oversampled pixel centres: (n - 1) / 2 is the centre, as photutils assumes
    offset = (fine.shape[0] - (n - 1) * supersample - 1) // 2
    data = fine[offset::supersample, offset::supersample][:n, :n]
    uc = (np.arange(n) - (n - 1) / 2.0) / OVERSAMPLE
    r = np.hypot(uc[:, None], uc[None, :])
    taper = np.clip((TAPER[1] - r) / (TAPER[1] - TAPER[0]), 0.0, 1.0)
    data = data * 0.5 * (1.0 - np.cos(np.pi * taper))
    data *= OVERSAMPLE**2 / data.sum()
    return PsfModel(fwhm_pix=fwhm_pix, data=data)


def _drizzled_images(psf: PsfModel) -> list[tuple[np.ndarray, tuple[float, float]]]:
    """Unit-flux stars as they look in an i2d at the native scale: detector sampling at 4x4 pixel
    phases, then drizzle (pixfrac 1) onto a grid offset by a quarter-pixel pattern.

    Returns (image, (x, y) of the star in the image) pairs."""
    o = OVERSAMPLE
    n = psf.data.shape[0]
    out = []
    for i in range(o):
        for j in range(o):
            # detector samples: every o-th fine sample; the star sits (i + 0.5)/o - 0.5 px off centre
            det = psf.data[i::o, j::o]
            ny, nx = det.shape
            cy = ((n - 1) / 2.0 - i) / o
            cx = ((n - 1) / 2.0 - j) / o
            # drizzle onto a grid shifted by (dy, dx): pixfrac 1 overlap weights = bilinear interpolation
            dy, dx = ((i + j) % o) / o, ((i + 2 * j) % o) / o
            img = (1 - dy) * (1 - dx) * det + dy * (1 - dx) * np.roll(det, -1, 0) \
                + (1 - dy) * dx * np.roll(det, -1, 1) + dy * dx * np.roll(np.roll(det, -1, 0), -1, 1)
            out.append((img, (cx - dx, cy - dy)))
            assert ny == nx
    return out


def _aperture_sums(images, radii) -> np.ndarray:
    """Mean over the images of the 'exact' circular-aperture sums (photutils, as source_catalog)."""
    from photutils.aperture import CircularAperture, aperture_photometry

    sums = np.zeros(len(radii))
    for img, pos in images:
        apertures = [CircularAperture(pos, r) for r in radii]
        table = aperture_photometry(img, apertures, method="exact")
        sums += np.array([float(table[f"aperture_sum_{k}"][0]) for k in range(len(radii))])
    return sums / len(images)


def apcorr_rows(psf: PsfModel) -> list[tuple[float, float, float, float, float]]:
    """(eefraction, radius px, apcorr, skyin, skyout) rows for jwst's APCORR table."""
    images = _drizzled_images(psf)
    radii = np.arange(0.3, 12.0, 0.1)
    ee = _aperture_sums(images, radii)
    rows_r = [float(np.interp(f, ee, radii)) for f in EE_FRACTIONS]
    measured = _aperture_sums(images, rows_r)
    return [(f, r, 1.0 / m, SKY_ANNULUS[0], SKY_ANNULUS[1])
            for f, r, m in zip(EE_FRACTIONS, rows_r, measured, strict=True)]
