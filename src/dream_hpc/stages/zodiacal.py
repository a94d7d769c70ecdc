"""The zodiacal background of one exposure, per filter, for its field and date: offline, from published tables.

Zodiacal light (sunlight scattered by interplanetary dust below ~3.5 um, the dust's thermal emission above)
is the background of every NIRCam exposure. Mirage's own levels (`bkgdrate: low|medium|high`) call
jwst_backgrounds, which downloads its model from STScI; a run here may not touch the network, and one flat
number for every filter (this project's first 0.2 ADU/s) makes F277W's background as faint as F150W's.
So the level is computed here from Leinert et al. (1998, A&AS 127, 1, "The 1997 reference of diffuse night
sky brightness"):

- Table 19: the zodiacal spectral radiance at 90 deg solar elongation in the ecliptic, 0.2-140 um
  (W m^-2 sr^-1 um^-1), interpolated log-log in wavelength;
- Table 17: the brightness's dependence on helio-ecliptic longitude (lambda - lambda_sun) and ecliptic
  latitude beta (S10 units at 500 nm), normalised to (90 deg, 0 deg), interpolated bilinearly.

Applying the visible-light geometry of Table 17 at NIRCam wavelengths assumes the dust's colour does not
change with direction; Leinert et al. discuss a few-10% reddening with elongation, and at 4-5 um, where
thermal emission dominates, the latitude profile is somewhat flatter. That is the accuracy claimed here:
a realistic level per filter and field (tens of percent), not a prediction of a given day's sky to 1%.
JWST's own thermal emission and stray light are left out: below ~4 um they are a small fraction of the
zodiacal light (Rigby et al. 2023, PASP 135, 048002).

The band average is photon-weighted over Mirage's filter+OTE throughput for the detector's module, and
the count rate uses Mirage's zeropoint (PHOTFNU, the same conversion Mirage uses for sources) and the
pixel's nominal area, so the pipeline's PHOTMJSR (refkit/photometry.py) turns it back into the same
MJy/sr: the science check compares the calibrated sky with this level.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

# Leinert et al. (1998), Table 19: wavelength (um) and spectral radiance (W m^-2 sr^-1 um^-1) at 90 deg
# solar elongation in the ecliptic.
_T19_UM = np.array([0.2, 0.3, 0.4, 0.5, 0.7, 0.9, 1.0, 1.2, 2.2, 3.5, 4.8, 12.0, 25.0, 60.0, 100.0, 140.0])
_T19_RADIANCE = np.array([2.5e-8, 5.3e-7, 2.2e-6, 2.6e-6, 2.0e-6, 1.3e-6, 1.2e-6, 8.1e-7, 1.7e-7, 5.2e-8,
                          1.2e-7, 7.5e-7, 3.2e-7, 1.8e-8, 3.2e-9, 6.9e-10])

# Leinert et al. (1998), Table 17: brightness (S10 units) by helio-ecliptic longitude (rows, deg) and
# |ecliptic latitude| (columns, deg). Cells inside the Sun's exclusion (no data) are NaN; JWST never
# points there (solar elongation 85-135 deg).
_T17_DLON = np.array([0, 5, 10, 15, 20, 25, 30, 35, 40, 45, 60, 75, 90, 105, 120, 135, 150, 165, 180], float)
_T17_BETA = np.array([0, 5, 10, 15, 20, 25, 30, 45, 60, 75, 90], float)
_NA = math.nan
_T17 = np.array([
    [_NA, _NA, _NA, 3140, 1610, 985, 640, 275, 150, 100, 77],
    [_NA, _NA, _NA, 2940, 1540, 945, 625, 271, 150, 100, 77],
    [_NA, _NA, 4740, 2470, 1370, 865, 590, 264, 148, 100, 77],
    [11500, 6780, 3440, 1860, 1110, 755, 525, 251, 146, 100, 77],
    [6400, 4480, 2410, 1410, 910, 635, 454, 237, 141, 99, 77],
    [3840, 2830, 1730, 1100, 749, 545, 410, 223, 136, 97, 77],
    [2480, 1870, 1220, 845, 615, 467, 365, 207, 131, 95, 77],
    [1650, 1270, 910, 680, 510, 397, 320, 193, 125, 93, 77],
    [1180, 940, 700, 530, 416, 338, 282, 179, 120, 92, 77],
    [910, 730, 555, 442, 356, 292, 250, 166, 116, 90, 77],
    [505, 442, 352, 292, 243, 209, 183, 134, 104, 86, 77],
    [338, 317, 269, 227, 196, 172, 151, 116, 93, 82, 77],
    [259, 251, 225, 193, 166, 147, 132, 104, 86, 79, 77],
    [212, 210, 197, 170, 150, 133, 119, 96, 82, 77, 77],
    [188, 186, 177, 154, 138, 125, 113, 90, 77, 74, 77],
    [179, 178, 166, 147, 134, 122, 110, 90, 77, 73, 77],
    [179, 178, 165, 148, 137, 127, 116, 96, 79, 72, 77],
    [196, 192, 179, 165, 151, 141, 131, 104, 82, 72, 77],
    [230, 212, 195, 178, 163, 148, 134, 105, 83, 72, 77],
])
_T17_REFERENCE = 259.0  # (90 deg, 0 deg): where Table 19 is given

OBLIQUITY_DEG = 23.4393  # mean obliquity of the ecliptic, J2000
JWST_ELONGATION_DEG = (85.0, 135.0)  # the solar elongations JWST can point at (its field of regard)
C_UM_S = 2.99792458e14
W_M2_HZ_PER_MJY = 1e-20


class ZodiacalError(ValueError):
    """A field or date the tables do not cover; one line naming the fix."""


@dataclass(frozen=True)
class ZodiacalLevel:
    """The zodiacal background of one exposure: where the field was, and what that gives in its filter."""

    filter: str
    ecliptic_lon_deg: float
    ecliptic_lat_deg: float
    sun_lon_deg: float
    solar_elongation_deg: float
    position_factor: float  # Table 17 relative to (90 deg, 0 deg)
    mjy_sr: float  # photon-weighted band average
    adu_s: float  # per pixel of the nominal area: what Mirage adds (`bkgdrate`)
    in_field_of_regard: bool  # False: JWST could not point there on that date (the level is still computed)

    def to_dict(self) -> dict[str, float | str | bool]:
        return asdict(self)


def ecliptic(ra_deg: float, dec_deg: float) -> tuple[float, float]:
    """(longitude, latitude) in degrees on the J2000 mean ecliptic (no time-dependent frame, no data files)."""
    ra, dec, eps = map(math.radians, (ra_deg, dec_deg, OBLIQUITY_DEG))
    lat = math.asin(math.sin(dec) * math.cos(eps) - math.cos(dec) * math.sin(eps) * math.sin(ra))
    lon = math.atan2(math.sin(ra) * math.cos(eps) + math.tan(dec) * math.sin(eps), math.cos(ra))
    return math.degrees(lon) % 360.0, math.degrees(lat)


def sun_longitude(when: datetime) -> float:
    """The Sun's apparent ecliptic longitude (deg), the Astronomical Almanac's low-precision formula
    (good to 0.01 deg, 1950-2050). JWST at L2 sees the Sun in the same direction as the Earth does."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    n = (when - datetime(2000, 1, 1, 12, tzinfo=UTC)).total_seconds() / 86400.0
    mean_lon = 280.460 + 0.9856474 * n
    anomaly = math.radians(357.528 + 0.9856003 * n)
    return (mean_lon + 1.915 * math.sin(anomaly) + 0.020 * math.sin(2 * anomaly)) % 360.0


def position_factor(delta_lon_deg: float, beta_deg: float) -> float:
    """Table 17's brightness at (|lambda - lambda_sun|, |beta|) relative to (90, 0), bilinear."""
    dlon = abs((delta_lon_deg + 180.0) % 360.0 - 180.0)
    beta = min(abs(beta_deg), 90.0)
    i = min(int(np.searchsorted(_T17_DLON, dlon, side="right")) - 1, len(_T17_DLON) - 2)
    j = min(int(np.searchsorted(_T17_BETA, beta, side="right")) - 1, len(_T17_BETA) - 2)
    fx = (dlon - _T17_DLON[i]) / (_T17_DLON[i + 1] - _T17_DLON[i])
    fy = (beta - _T17_BETA[j]) / (_T17_BETA[j + 1] - _T17_BETA[j])
    cell = _T17[i:i + 2, j:j + 2]
    value = ((1 - fx) * (1 - fy) * cell[0, 0] + fx * (1 - fy) * cell[1, 0]
             + (1 - fx) * fy * cell[0, 1] + fx * fy * cell[1, 1])
    if not math.isfinite(value):
        raise ZodiacalError(f"solar elongation too small for Leinert et al.'s Table 17 (|lambda - lambda_sun| "
                            f"{dlon:.1f} deg, beta {beta:.1f} deg): JWST cannot point there; change the date "
                            "(survey.start_date) or the field")
    return float(value / _T17_REFERENCE)


def radiance(wavelength_um: np.ndarray) -> np.ndarray:
    """Table 19's spectral radiance (W m^-2 sr^-1 um^-1), log-log interpolated."""
    logw = np.log10(np.clip(wavelength_um, _T19_UM[0], _T19_UM[-1]))
    return 10.0 ** np.interp(logw, np.log10(_T19_UM), np.log10(_T19_RADIANCE))


def throughput_file(filt: str, module: str, pupil: str = "CLEAR") -> Path:
    """Mirage's filter + OTE throughput table for the filter and NIRCam module (shipped with mirage)."""
    from dream_hpc.refkit.nircam import zeropoint_file

    path = zeropoint_file().parent / f"{filt}_{pupil}_nircam_plus_ote_throughput_mod{module.lower()}_sorted.txt"
    if not path.exists():
        raise ZodiacalError(f"no throughput table for {filt}/{pupil} module {module} in Mirage's config "
                            f"({path.name}); give simulation.background_rate as a number (ADU/s/pixel)")
    return path


@functools.cache
def band_radiance_mjy_sr(filt: str, module: str, pupil: str = "CLEAR") -> float:
    """Table 19's radiance averaged over the band as a photon-counting detector sees it, as the f_nu of a
    flat-spectrum source giving the same count rate: int I_lam T lam dlam / (c int T / lam dlam)."""
    table = np.loadtxt(throughput_file(filt, module, pupil), skiprows=1)
    wave, thru = table[:, 0], np.clip(table[:, 1], 0.0, None)
    num = np.trapezoid(radiance(wave) * thru * wave, wave)  # W m^-2 sr^-1
    den = C_UM_S * np.trapezoid(thru / wave, wave)  # Hz
    return float(num / den / W_M2_HZ_PER_MJY)


def mjy_sr_to_adu_s(detector: str, filt: str, mjy_sr: float, pupil: str = "CLEAR") -> float:
    """Surface brightness -> count rate per pixel of the nominal area, with Mirage's PHOTFNU (refkit's PHOTMJSR)."""
    from dream_hpc.refkit.distortion import ARCSEC2_TO_SR, nominal_area_arcsec2
    from dream_hpc.refkit.nircam import detector as nircam_detector
    from dream_hpc.refkit.nircam import zeropoint
    from dream_hpc.refkit.photometry import photmjsr

    det = nircam_detector(detector)
    area_sr = nominal_area_arcsec2(det) * ARCSEC2_TO_SR
    return mjy_sr / photmjsr(zeropoint(det, filt, pupil), area_sr)


def level(ra_deg: float, dec_deg: float, when: datetime, detector: str, filt: str,
          pupil: str = "CLEAR") -> ZodiacalLevel:
    """The zodiacal background of an exposure of `detector`/`filt` at (ra, dec) on `when` (UTC)."""
    from dream_hpc.refkit.nircam import detector as nircam_detector

    lon, lat = ecliptic(ra_deg, dec_deg)
    sun = sun_longitude(when)
    dlon = lon - sun
    elong = math.degrees(math.acos(math.cos(math.radians(lat)) * math.cos(math.radians(dlon))))
    factor = position_factor(dlon, lat)
    mjy = band_radiance_mjy_sr(filt, nircam_detector(detector).module, pupil) * factor
    lo, hi = JWST_ELONGATION_DEG
    return ZodiacalLevel(filter=filt, ecliptic_lon_deg=lon, ecliptic_lat_deg=lat, sun_lon_deg=sun,
                         solar_elongation_deg=elong, position_factor=factor, mjy_sr=mjy,
                         adu_s=mjy_sr_to_adu_s(detector, filt, mjy, pupil), in_field_of_regard=lo <= elong <= hi)


def for_unit(ra_deg: float, dec_deg: float, date_obs: str, time_obs: str, detector: str, filt: str,
             pupil: str = "CLEAR") -> ZodiacalLevel:
    """`level` for an exposure given as its header values (DATE-OBS, TIME-OBS in UTC)."""
    return level(ra_deg, dec_deg, datetime.fromisoformat(f"{date_obs}T{time_obs}"), detector, filt, pupil)


def background_truth(rate: float | str, ra_deg: float, dec_deg: float, date_obs: str, time_obs: str,
                     detector: str, filt: str, pupil: str = "CLEAR") -> dict[str, object]:
    """What an exposure's sky is made of, as recorded in its provenance: `simulation.background_rate`
    resolved (zodiacal: the level above; a number: that count rate, and its MJy/sr through the same PHOTMJSR)."""
    if rate == "zodiacal":
        lev = for_unit(ra_deg, dec_deg, date_obs, time_obs, detector, filt, pupil)
        return {"model": "zodiacal (Leinert et al. 1998)", **lev.to_dict()}
    adu = float(rate)
    photmjsr = 1.0 / mjy_sr_to_adu_s(detector, filt, 1.0, pupil)
    return {"model": "flat", "filter": filt, "adu_s": adu, "mjy_sr": adu * photmjsr}
