"""The zodiacal background per filter (stages/zodiacal.py): geometry, tables, band average, count rate."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import numpy as np
import pytest

from dream_hpc.stages import zodiacal


def test_ecliptic_coordinates_of_known_points() -> None:
    assert zodiacal.ecliptic(0.0, 0.0) == pytest.approx((0.0, 0.0), abs=1e-9)  # the vernal equinox
    lon, lat = zodiacal.ecliptic(90.0, zodiacal.OBLIQUITY_DEG)  # the summer solstice point
    assert (lon, lat) == pytest.approx((90.0, 0.0), abs=1e-9)
    assert zodiacal.ecliptic(270.0, 90.0 - zodiacal.OBLIQUITY_DEG)[1] == pytest.approx(90.0, abs=1e-6)  # NEP
    # COSMOS lies ~9.4 deg south of the ecliptic
    assert zodiacal.ecliptic(150.1163, 2.2010)[1] == pytest.approx(-9.37, abs=0.02)


@pytest.mark.parametrize(("when", "expected"), [
    (datetime(2024, 3, 20, 3, 6, tzinfo=UTC), 0.0),  # March equinox 2024, 03:06 UTC
    (datetime(2024, 6, 20, 20, 51, tzinfo=UTC), 90.0),  # June solstice
    (datetime(2024, 12, 21, 9, 20, tzinfo=UTC), 270.0),  # December solstice
])
def test_sun_longitude_at_equinox_and_solstices(when: datetime, expected: float) -> None:
    got = zodiacal.sun_longitude(when)
    assert abs((got - expected + 180) % 360 - 180) < 0.02


def test_position_factor_is_one_at_the_reference_and_falls_with_latitude() -> None:
    assert zodiacal.position_factor(90.0, 0.0) == pytest.approx(1.0)
    assert zodiacal.position_factor(-90.0, -0.0) == pytest.approx(1.0)  # symmetric in both
    lats = [zodiacal.position_factor(135.0, b) for b in (0, 10, 30, 45, 75)]
    assert all(a > b for a, b in zip(lats, lats[1:], strict=False))
    assert zodiacal.position_factor(180.0, 90.0) == pytest.approx(77 / 259)  # the ecliptic pole
    # halfway between table cells: the mean of the four
    assert zodiacal.position_factor(97.5, 2.5) == pytest.approx((259 + 251 + 212 + 210) / 4 / 259)


def test_no_table_value_near_the_sun_is_one_clear_line() -> None:
    with pytest.raises(zodiacal.ZodiacalError, match="survey.start_date"):
        zodiacal.position_factor(2.0, 1.0)


def test_radiance_hits_the_table_and_interpolates_log_log() -> None:
    assert zodiacal.radiance(np.array([1.2, 2.2, 3.5]))[:] == pytest.approx([8.1e-7, 1.7e-7, 5.2e-8])
    mid = math.sqrt(1.2 * 2.2)  # the geometric midpoint: the geometric mean of the two radiances
    assert float(zodiacal.radiance(np.array([mid]))[0]) == pytest.approx(math.sqrt(8.1e-7 * 1.7e-7))


def test_band_average_is_close_to_the_radiance_at_the_pivot() -> None:
    """The photon-weighted band average of a smooth spectrum is its f_nu near the band's pivot."""
    from dream_hpc.refkit.nircam import detector, zeropoint

    for det, filt in (("NRCB1", "F150W"), ("NRCB5", "F277W"), ("NRCB5", "F444W")):
        pivot = zeropoint(detector(det), filt).pivot_um
        at_pivot = float(zodiacal.radiance(np.array([pivot]))[0]) * pivot ** 2 / zodiacal.C_UM_S / 1e-20
        assert zodiacal.band_radiance_mjy_sr(filt, "B") == pytest.approx(at_pivot, rel=0.08), filt


def test_levels_differ_per_filter_and_convert_with_the_kits_photmjsr() -> None:
    """F277W's count rate per pixel is ~4x F150W's (4x the pixel area, similar MJy/sr): one flat rate for
    every filter was wrong by that much. The MJy/sr -> ADU/s factor is 1 / PHOTMJSR as the kit writes it."""
    from dream_hpc.refkit.distortion import nominal_area_arcsec2
    from dream_hpc.refkit.nircam import detector, zeropoint
    from dream_hpc.refkit.photometry import photmjsr

    sw = zodiacal.for_unit(150.1163, 2.201, "2024-01-01", "00:00:00.000", "NRCB1", "F150W")
    lw = zodiacal.for_unit(150.1163, 2.201, "2024-01-01", "00:00:00.000", "NRCB5", "F277W")
    assert sw.in_field_of_regard and lw.in_field_of_regard
    assert 0.1 < sw.mjy_sr < 0.5 and 0.1 < lw.mjy_sr < 0.5  # tenths of MJy/sr, as JWST measures
    assert lw.adu_s / sw.adu_s > 3.0
    det = detector("NRCB5")
    area = nominal_area_arcsec2(det) * (math.pi / 180 / 3600) ** 2
    assert lw.adu_s * photmjsr(zeropoint(det, "F277W"), area) == pytest.approx(lw.mjy_sr)


def test_the_level_follows_the_sun_through_the_year() -> None:
    """Closer to the Sun, brighter: June (elongation ~80 deg, outside JWST's field of regard) vs January."""
    jan = zodiacal.for_unit(150.1163, 2.201, "2024-01-01", "00:00:00", "NRCB1", "F150W")
    jun = zodiacal.for_unit(150.1163, 2.201, "2024-06-01", "00:00:00", "NRCB1", "F150W")
    assert jun.solar_elongation_deg < jan.solar_elongation_deg and jun.mjy_sr > 1.3 * jan.mjy_sr
    assert not jun.in_field_of_regard


def test_background_rate_in_the_config() -> None:
    from dream_hpc.config import ConfigError, SurveyConfig, validate

    cfg = SurveyConfig()
    assert cfg.simulation.background_rate == "zodiacal"
    cfg.simulation.background_rate = "low"
    with pytest.raises(ConfigError, match="simulation.background_rate: 'low'"):
        validate(cfg)
    flat = zodiacal.background_truth(0.2, 150.1, 2.2, "2024-01-01", "00:00:00", "NRCB1", "F150W")
    assert flat["model"] == "flat" and flat["adu_s"] == 0.2 and flat["mjy_sr"] > 0
