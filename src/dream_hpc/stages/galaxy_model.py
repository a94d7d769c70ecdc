"""What jwst's source_catalog should measure for a galaxy: its `aper_total` applied to the PSF-convolved Sersic model.

`aper_total_flux` (jwst/source_catalog/source_catalog.py, `aper_total_flux` and
`set_aperture_properties`) is the flux in the largest encircled-energy aperture (radius R, from the
APCORR reference: aperture_ee3 = 70% by default) minus the local background (the sigma-clipped median
in the APCORR table's skyin-skyout annulus, times the aperture's area), times that aperture's
correction, `apcorr` = 1 / (what a point source yields). It is exact for stars ("should be used only
for unresolved sources") and low for galaxies twice over: their light beyond R is not the PSF's, and
their light in the annulus is taken for sky. Here both are computed for each galaxy from what it was
simulated as (Mirage: a Sersic2D with the catalog's semi-major half-light radius, index and axis
ratio, convolved with the gridded PSF library, normalised to its total):

    M(img) = sum_{r<R} img - pi R^2 median_annulus(img + noise)
    expected aper_total - true total = -2.5 log10(M(galaxy * PSF) / M(PSF))

`apcorr` cancels (it makes M(PSF) the input flux; the stars' residual checks that). The annulus median
is that of the galaxy *plus the mosaic's pixel noise* (sigma from its ERR array): where noise
dominates the annulus the median tends to the galaxy's mean there, where the galaxy dominates to its
own median (lower than the mean for an elongated galaxy). Circular apertures make the measurement
independent of the galaxy's position angle, so it is rendered along the pixel axes. The PSF is the
one the simulation used (the kit's Mirage PSF library for the filter), sampled at the mosaic scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

OVERSAMPLE_CORE = 24  # sub-samples per pixel side in the central pixels (even: none on the cusp itself)
OVERSAMPLE = 5  # elsewhere
MIRAGE_STAMP_FRACTION = 0.9995  # mirage.utils.constants.SERSIC_FRACTIONAL_SIGNAL
CUSP_MAX_PX = 3.0  # half-light radii below this get the central pixel from the analytic total
CORE_HALF = 2  # the central (2 * CORE_HALF + 1)^2 pixels get OVERSAMPLE_CORE


@dataclass(frozen=True)
class Aperture:
    """source_catalog's aper_total aperture and its local-background annulus, in mosaic pixels."""

    radius_px: float
    sky_in_px: float
    sky_out_px: float


def sersic_bn(n: float) -> float:
    """b_n with Gamma(2n, b_n) = Gamma(2n)/2: the half-light radius encloses half the light."""
    from scipy.special import gammaincinv

    return float(gammaincinv(2.0 * n, 0.5))


def sersic_image(r_eff_px: float, n: float, q: float, half: int) -> np.ndarray:
    """A Sersic profile of semi-major half-light radius `r_eff_px`, index `n`, axis ratio `q` (major
    axis along x), pixel-averaged on a (2 half + 1)^2 grid centred on the central pixel, normalised so
    the whole plane holds 1 (light beyond the grid is lost, as beyond any aperture).

    The central pixel of a compact, high-index profile cannot be sampled (an n = 4 cusp): it gets the
    analytic light inside the grid minus the (well-sampled) rest, so the total is exact."""
    from scipy.special import gamma, gammainc

    n = float(np.clip(n, 0.2, 8.0))
    q = float(np.clip(q, 0.05, 1.0))
    r_eff_px = max(float(r_eff_px), 1e-3)
    bn = sersic_bn(n)
    total = 2.0 * math.pi * q * r_eff_px**2 * n * math.exp(bn) * bn ** (-2.0 * n) * gamma(2.0 * n)

    def averaged(lo: int, hi: int, sub: int) -> np.ndarray:
        # pixel centres lo..hi (both axes), each the mean of sub x sub samples: I(r) / I_e
        u = lo - 0.5 + (np.arange((hi - lo + 1) * sub) + 0.5) / sub
        x, y = np.meshgrid(u, u)
        r = np.hypot(x, y / q) / r_eff_px
        f = np.exp(-bn * (r ** (1.0 / n) - 1.0))
        m = hi - lo + 1
        return f.reshape(m, sub, m, sub).mean(axis=(1, 3))

    img = averaged(-half, half, OVERSAMPLE)
    c = min(CORE_HALF, half)
    img[half - c:half + c + 1, half - c:half + c + 1] = averaged(-c, c, OVERSAMPLE_CORE)
    if r_eff_px < CUSP_MAX_PX:
        # compact: light inside the grid is that inside the ellipse of the grid's area (all of it, to
        # far better than matters here)
        r_grid = (2 * half + 1) / math.sqrt(math.pi * q)
        inside = total * float(gammainc(2.0 * n, bn * (r_grid / r_eff_px) ** (1.0 / n)))
        rest = float(img.sum() - img[half, half])
        if inside > rest:
            img[half, half] = inside - rest
    return img / total


def mirage_sersic_image(r_eff_px: float, n: float, q: float, half: int, fraction: float = MIRAGE_STAMP_FRACTION,
                        max_pixels: float = 2500.0**2, match_threshold: float = 0.02) -> np.ndarray:
    """The galaxy as Mirage renders it (mirage 2.5 `Catalog_seed.create_galaxy`), per unit total flux, on
    the (2 half + 1)^2 grid: astropy's Sersic2D *sampled at pixel centres* with the profile's centre on a
    pixel centre, over a stamp holding `fraction` of the light; amplitude from the circular analytic
    total, and when the stamp's sum is off by more than `match_threshold` (any q < 0.98, or a cusp the
    central sample overshoots) rescaled to `fraction` of the total. For n >~ 2 and small radii that
    central sample carries most of the light: Mirage's galaxy is then far more compact than its
    catalog profile (measured on the demo: n ~ 3 galaxies come out ~0.7 mag brighter in the aperture
    than the profile predicts). The axes are aligned with the pixels: the circular apertures do not care."""
    from astropy.modeling.models import Sersic2D
    from scipy.special import gamma, gammaincinv

    n = float(np.clip(n, 0.2, 8.0))
    ellip = 1.0 - float(np.clip(q, 0.05, 1.0))
    r_eff_px = max(float(r_eff_px), 1e-3)
    bn = float(gammaincinv(2.0 * n, 0.5))
    circular_total = r_eff_px**2 * 2.0 * math.pi * n * math.exp(bn) / bn ** (2.0 * n) * gamma(2.0 * n)

    def extent(frac: float) -> tuple[int, int]:
        x = float(gammaincinv(2.0 * n, frac))
        radius = r_eff_px * (x / bn) ** n
        a = math.sqrt(radius**2 / (1.0 - ellip))
        b = a * (1.0 - ellip)
        nx = int(math.ceil(max(2 * a, 2 * b)))  # position angle 0: the major axis along x
        ny = int(math.ceil(2 * b))
        return nx + (nx % 2 == 0), ny + (ny % 2 == 0)

    limit = fraction
    nx, ny = extent(limit)
    while nx * ny > max_pixels:  # Mirage trims the stamp the same way
        limit -= 0.005
        nx, ny = extent(limit)
    model = Sersic2D(amplitude=1.0 / circular_total, r_eff=r_eff_px, n=n, x_0=0.0, y_0=0.0, ellip=ellip, theta=0.0)
    hx, hy = nx // 2, ny // 2
    stamp_sum = float(model(*np.meshgrid(np.arange(-hx, hx + 1), np.arange(-hy, hy + 1))).sum())
    scale = limit / stamp_sum if abs(1.0 - stamp_sum / limit) > match_threshold else 1.0
    u = np.arange(-half, half + 1)
    x, y = np.meshgrid(u, u)
    img = model(x, y) * scale
    img[(np.abs(x) > hx) | (np.abs(y) > hy)] = 0.0  # nothing beyond Mirage's stamp
    return img


def psf_at_mosaic_scale(library: Path, pixel_ratio: float = 1.0) -> np.ndarray:
    """The PSF library's (mean) oversampled effective PSF, sampled once per mosaic pixel, centred on a
    pixel, normalised to 1. `pixel_ratio`: mosaic pixel / detector pixel."""
    from astropy.io import fits
    from scipy.ndimage import map_coordinates

    with fits.open(library) as hdul:
        data = np.asarray(hdul[0].data, float)
        over = int(hdul[0].header.get("OVERSAMP", 1))
    epsf = data.reshape(-1, *data.shape[-2:]).mean(axis=0)
    n = epsf.shape[-1]
    centre = (n - 1) / 2.0  # photutils' convention for an oversampled ePSF
    step = over * pixel_ratio  # library samples per mosaic pixel
    half = int((n - 1) / 2.0 / step)
    u = centre + np.arange(-half, half + 1) * step
    yy, xx = np.meshgrid(u, u, indexing="ij")
    psf = map_coordinates(epsf, [yy, xx], order=3, mode="constant")
    psf = np.clip(psf, 0.0, None)
    return psf / psf.sum()


def noisy_median(values: np.ndarray, sigma: float) -> float:
    """Median of values + Gaussian noise of `sigma` (the annulus' pixels as the catalog sees them):
    m with mean(Phi((m - v) / sigma)) = 1/2; the plain median when sigma is 0."""
    from scipy.optimize import brentq
    from scipy.special import ndtr

    values = np.asarray(values, float)
    if not sigma > 0.0:
        return float(np.median(values))
    lo, hi = float(values.min()) - 6 * sigma, float(values.max()) + 6 * sigma
    return float(brentq(lambda m: float(np.mean(ndtr((m - values) / sigma))) - 0.5, lo, hi, xtol=1e-6 * sigma))


def measured(img: np.ndarray, ap: Aperture, sigma: float = 0.0) -> float:
    """source_catalog's background-subtracted flux in the aper_total aperture for `img` (centred on its
    central pixel): photutils 'exact' aperture sum, annulus by pixel centre (as jwst's masks)."""
    from photutils.aperture import CircularAnnulus, CircularAperture

    c = (img.shape[-1] - 1) / 2.0
    aper = CircularAperture((c, c), ap.radius_px)
    flux = float(aper.to_mask(method="exact").multiply(img).sum())
    ann = CircularAnnulus((c, c), ap.sky_in_px, ap.sky_out_px).to_mask(method="center")
    vals = ann.get_values(img)
    return flux - aper.area * noisy_median(vals, sigma)


class ApertureModel:
    """Per galaxy, the expected `aper_total` bias and the fraction of its light the aperture measures."""

    def __init__(self, psf: np.ndarray, ap: Aperture):
        self.psf = psf
        self.ap = ap
        self.half = int(math.ceil(ap.sky_out_px)) + 2
        point = np.zeros((2 * self.half + 1,) * 2)
        point[self.half, self.half] = 1.0
        self.point = self._convolved(point)
        self.m_point = measured(self.point, ap)

    def _convolved(self, img: np.ndarray) -> np.ndarray:
        from scipy.signal import fftconvolve

        return fftconvolve(img, self.psf, mode="same")

    def galaxy(self, r_eff_px: float, n: float, q: float, rendering: str = "mirage") -> np.ndarray:
        """The PSF-convolved galaxy of unit total flux: as Mirage renders it, or the catalog's ideal profile."""
        render = mirage_sersic_image if rendering == "mirage" else sersic_image
        return self._convolved(render(r_eff_px, n, q, self.half))

    def ratio(self, r_eff_px: float, n: float, q: float, total: float = 1.0, sigma: float = 0.0,
              rendering: str = "mirage") -> float:
        """M(galaxy) / M(point source) for a galaxy of `total` flux over pixel noise `sigma` (same units)."""
        img = self.galaxy(r_eff_px, n, q, rendering)
        m = measured(img, self.ap, sigma / total if total > 0 else 0.0)
        return m / self.m_point

    def bias_mag(self, r_eff_px: float, n: float, q: float, total: float = 1.0, sigma: float = 0.0,
                 rendering: str = "mirage") -> float:
        """Expected aper_total_abmag - true total magnitude (inf when nothing would be measured)."""
        r = self.ratio(r_eff_px, n, q, total, sigma, rendering)
        return -2.5 * math.log10(r) if r > 0 else math.inf


def psf_library(mirage_data: Path, detector: str, filter_: str) -> Path | None:
    """The Mirage gridded PSF library of a detector and filter (Mirage's file naming), if there is one."""
    lib = Path(mirage_data) / "nircam" / "gridded_psf_library"
    hits = sorted(lib.glob(f"nircam_{detector.lower()}_{filter_.lower()}_clear_*.fits"))
    return hits[0] if hits else None


def filter_psf(cfg: object, filter_: str, pixel_ratio: float = 1.0) -> tuple[np.ndarray | None, str]:
    """(PSF at the mosaic scale, where it came from) for a filter: the kit's Mirage PSF library of the
    survey's first detector that takes the filter (the kit has one PSF per detector and filter), or
    (None, why not)."""
    from dream_hpc.refkit import nircam
    from dream_hpc.refkit.nircam import InstrumentError

    root = Path(cfg.resolve(cfg.references.mirage_data))  # type: ignore[attr-defined]
    for name in cfg.instrument.detectors:  # type: ignore[attr-defined]
        try:
            nircam.check_filter(nircam.detector(name), filter_)
        except InstrumentError:
            continue
        lib = psf_library(root, name, filter_)
        if lib is not None:
            return psf_at_mosaic_scale(lib, pixel_ratio), f"mirage_data://{lib.relative_to(root)}"
    return None, f"no {filter_} PSF library under {root}"


@dataclass
class GalaxyPrediction:
    """Per input source (NaN where not computed): the fraction of its light the catalog's aperture
    measures after the local background, and the expected aper_total_abmag - true total."""

    fraction: np.ndarray
    bias: np.ndarray
    bias_ideal_profile: np.ndarray  # the same for the catalog's own (pixel-integrated) profile
    model: str


def predict(model: ApertureModel, candidates: np.ndarray, mag: np.ndarray, radius_px: np.ndarray,
            sersic: np.ndarray, axis_ratio: np.ndarray, pixel_sigma: np.ndarray, pixar_sr: float,
            ee_point: float, source: str) -> GalaxyPrediction:
    """The model for the `candidates` (galaxies bright enough to matter); the mosaic's flux unit is
    MJy/sr, so a source of AB `mag` sums to 3631e-6 10^(-0.4 mag) / pixar_sr over its pixels."""
    size = len(mag)
    fraction, bias, ideal = (np.full(size, np.nan) for _ in range(3))
    for k in np.flatnonzero(candidates):
        total = 3631.0 * 10 ** (-0.4 * float(mag[k])) * 1e-6 / pixar_sr
        args = (float(radius_px[k]), float(sersic[k]), float(axis_ratio[k]), total, float(pixel_sigma[k]))
        r = model.ratio(*args)
        fraction[k] = ee_point * r
        bias[k] = -2.5 * math.log10(r) if r > 0 else np.inf
        r_ideal = model.ratio(*args, rendering="ideal")
        ideal[k] = -2.5 * math.log10(r_ideal) if r_ideal > 0 else np.inf
    return GalaxyPrediction(fraction=fraction, bias=bias, bias_ideal_profile=ideal,
                            model=(f"source_catalog's aper_total (aperture {model.ap.radius_px:.2f} px, local sky "
                                   f"{model.ap.sky_in_px:g}-{model.ap.sky_out_px:g} px) on each galaxy's Sersic "
                                   f"profile as Mirage renders it, convolved with {source}"))


def pixel_sigma_at(err: np.ndarray, x: np.ndarray, y: np.ndarray, half: int = 3) -> np.ndarray:
    """Median ERR in a (2 half + 1)^2 box at each position (NaN off the image)."""
    ny, nx = err.shape
    out = np.full(len(x), np.nan)
    for k, (xc, yc) in enumerate(zip(np.rint(x).astype(int), np.rint(y).astype(int), strict=True)):
        if 0 <= xc < nx and 0 <= yc < ny:
            box = err[max(yc - half, 0):yc + half + 1, max(xc - half, 0):xc + half + 1]
            good = box[np.isfinite(box) & (box > 0)]
            out[k] = float(np.median(good)) if good.size else np.nan
    return out
