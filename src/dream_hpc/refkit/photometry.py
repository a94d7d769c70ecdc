"""Flux calibration consistent with Mirage: count rate <-> AB magnitude <-> MJy/sr.

Mirage turns an AB magnitude into a count rate with its zeropoint table:
rate [DN/s] = 10**(-0.4 (m + 48.6)) / PHOTFNU, so 1 DN/s is PHOTFNU erg/s/cm^2/Hz and the
table's ABMAG is the magnitude giving 1 DN/s. jwst's photom multiplies DN/s by PHOTMJSR to get
MJy/sr, so PHOTMJSR = PHOTFNU [MJy] / PIXAR_SR = 3631e-6 * 10**(-0.4 ABMAG) / PIXAR_SR, with
PIXAR_SR the nominal pixel area of the distortion model.
"""

from __future__ import annotations

from dream_hpc.refkit.nircam import Zeropoint

ERG_S_CM2_HZ_TO_MJY = 1e17  # 1 erg/s/cm^2/Hz = 1e23 Jy = 1e17 MJy
AB_ZEROPOINT_JY = 3631.0
PHOTOM_UNCERTAINTY = 0.01  # fractional, stated in the PHOTOM table


def photmjsr(zp: Zeropoint, pixar_sr: float) -> float:
    """MJy/sr per DN/s for a pixel of the nominal area `pixar_sr`."""
    return zp.photfnu * ERG_S_CM2_HZ_TO_MJY / pixar_sr


def ab_mag_of_rate(zp: Zeropoint, rate_dn_s: float) -> float:
    """The AB magnitude Mirage assigns to a total count rate (inverse of its conversion)."""
    import math

    return zp.abmag - 2.5 * math.log10(rate_dn_s)


def rate_of_ab_mag(zp: Zeropoint, mag: float) -> float:
    """Total count rate (DN/s) Mirage gives a source of AB magnitude `mag`."""
    return 10 ** (-0.4 * (mag - zp.abmag))


def abvega_offset(zp: Zeropoint) -> float:
    """m_AB - m_Vega for the filter: the difference of the two magnitude zeropoints."""
    return zp.abmag - zp.vegamag
