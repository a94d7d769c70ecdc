"""Where an exposure looks: JWST attitude and NIRCam aperture outlines on the sky, computed as Mirage does.

Mirage places a detector with an attitude matrix built from the aperture reference point
(V2Ref, V3Ref), its RA/Dec and the local roll derived from PA_V3
(`mirage.utils.siaf_interface.get_siaf_information`). Planning (where each unit points) and
catalog selection (which sources fall on it) use the same math here, so the sources handed to
Mirage are the ones Mirage will actually see.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import numpy as np

from dream_hpc.core import offline


@functools.cache
def nircam_siaf() -> Any:
    """pysiaf's NIRCam SIAF, imported offline (its import-time PRD version check would go online)."""
    pysiaf_log = logging.getLogger("pysiaf")
    level = pysiaf_log.level
    pysiaf_log.setLevel(logging.ERROR)  # silence "cannot check PRD version online": offline by design
    try:
        with offline.network_forbidden():
            import pysiaf
    finally:
        pysiaf_log.setLevel(level)
    return pysiaf.Siaf("NIRCam")


def aperture(name: str) -> Any:
    siaf = nircam_siaf()
    if name not in siaf.apernames:
        raise ValueError(f"{name}: not a NIRCam SIAF aperture (check instrument.detectors and instrument.subarray)")
    return siaf[name]


@functools.cache
def _frame(name: str) -> tuple[float, float, float, int]:
    """(V2Ref, V3Ref, V3IdlYAngle in rad, VIdlParity) of an aperture."""
    ap = aperture(name)
    return float(ap.V2Ref), float(ap.V3Ref), float(np.deg2rad(ap.V3IdlYAngle)), int(ap.VIdlParity)


@functools.cache
def _corners(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(ideal, tel) corners (4, 2), cached: pysiaf rebuilds its distortion polynomials on every
    `corners` call (~10 ms), far too slow for 10^4 units."""
    ap = aperture(name)
    xi, yi = ap.corners("idl")
    v2, v3 = ap.corners("tel")
    return np.column_stack([xi, yi]).astype(float), np.column_stack([v2, v3]).astype(float)


def idl_to_tel(name: str, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    """pysiaf's planar ideal -> V2/V3 transform (JWST-STScI-001550 sect. 4.3), vectorised."""
    v2r, v3r, a, par = _frame(name)
    x, y = np.asarray(x, float), np.asarray(y, float)
    return v2r + par * np.cos(a) * x + np.sin(a) * y, v3r - par * np.sin(a) * x + np.cos(a) * y


def tel_to_idl(name: str, v2: Any, v3: Any) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `idl_to_tel`."""
    v2r, v3r, a, par = _frame(name)
    dx, dy = np.asarray(v2, float) - v2r, np.asarray(v3, float) - v3r
    return par * (np.cos(a) * dx - np.sin(a) * dy), np.sin(a) * dx + np.cos(a) * dy


def _rotations() -> Any:
    nircam_siaf()  # make sure pysiaf was imported offline first
    from pysiaf.utils import rotations

    return rotations


def local_roll(pa_v3: float, ra: float, dec: float, v2: float, v3: float) -> float:
    """Position angle of V3 at (v2, v3) [arcsec] given PA_V3 at V1: Mirage's `compute_local_roll`."""
    v2r, v3r = np.deg2rad(v2 / 3600.0), np.deg2rad(v3 / 3600.0)
    ra_r, dec_r, pa = np.deg2rad(ra), np.deg2rad(dec), np.deg2rad(pa_v3)
    m = np.array([
        [np.cos(ra_r) * np.cos(dec_r),
         -np.sin(ra_r) * np.cos(pa) + np.cos(ra_r) * np.sin(dec_r) * np.sin(pa),
         -np.sin(ra_r) * np.sin(pa) - np.cos(ra_r) * np.sin(dec_r) * np.cos(pa)],
        [np.sin(ra_r) * np.cos(dec_r),
         np.cos(ra_r) * np.cos(pa) + np.sin(ra_r) * np.sin(dec_r) * np.sin(pa),
         np.cos(ra_r) * np.sin(pa) - np.sin(ra_r) * np.sin(dec_r) * np.cos(pa)],
        [np.sin(dec_r), -np.cos(dec_r) * np.sin(pa), np.cos(dec_r) * np.cos(pa)],
    ])
    x = -(m[2, 0] * np.cos(v2r) + m[2, 1] * np.sin(v2r)) * np.sin(v3r) + m[2, 2] * np.cos(v3r)
    y = (m[0, 0] * m[1, 2] - m[1, 0] * m[0, 2]) * np.cos(v2r) + \
        (m[0, 1] * m[1, 2] - m[1, 1] * m[0, 2]) * np.sin(v2r)
    return float(np.rad2deg(np.arctan2(y, x)) % 360.0)


def attitude(ra: float, dec: float, pa_v3: float, v2: float, v3: float) -> np.ndarray:
    """Attitude matrix putting sky (ra, dec) at telescope (v2, v3) arcsec, V3 at PA_V3 (as Mirage)."""
    roll = local_roll(pa_v3, ra, dec, v2, v3)
    return _rotations().attitude(v2, v3, ra, dec, roll)


def sky_of(att: np.ndarray, v2: Any, v3: Any) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec (deg) of telescope positions (v2, v3 in arcsec) under attitude `att`."""
    ra, dec = _rotations().pointing(att, np.asarray(v2, float), np.asarray(v3, float))
    return np.asarray(ra, float) % 360.0, np.asarray(dec, float)


def tel_of(att: np.ndarray, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    """Telescope (v2, v3) arcsec of sky positions under attitude `att`."""
    v2, v3 = _rotations().getv2v3(att, np.asarray(ra, float), np.asarray(dec, float))
    return np.asarray(v2, float), np.asarray(v3, float)


def aperture_name(detector: str, subarray: str) -> str:
    return f"{detector.upper()}_{subarray.upper()}"


def reference_point(aperture_name_: str) -> tuple[float, float]:
    """(V2Ref, V3Ref) of an aperture, arcsec."""
    v2r, v3r, *_ = _frame(aperture_name_)
    return v2r, v3r


def unit_attitude(ra: float, dec: float, pa_v3: float, aperture_name_: str) -> np.ndarray:
    """The attitude Mirage builds for a unit: its aperture reference point at (ra, dec), roll from PA_V3."""
    return attitude(ra, dec, pa_v3, *reference_point(aperture_name_))


def outline_ideal(aperture_name_: str) -> np.ndarray:
    """Corners (4, 2) of an aperture in its ideal frame (arcsec, distortion-free, reference point at 0)."""
    return _corners(aperture_name_)[0].copy()


def outline_tel(aperture_name_: str) -> np.ndarray:
    """Corners (4, 2) of an aperture in the telescope (V2, V3) frame, arcsec."""
    return _corners(aperture_name_)[1].copy()


def outline_sky(ra: float, dec: float, pa_v3: float, aperture_name_: str) -> tuple[np.ndarray, np.ndarray]:
    """RA/Dec of the 4 corners of an aperture whose reference point sits at (ra, dec)."""
    att = unit_attitude(ra, dec, pa_v3, aperture_name_)
    corners = _corners(aperture_name_)[1]
    return sky_of(att, corners[:, 0], corners[:, 1])


def to_ideal(aperture_name_: str, att: np.ndarray, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    """Ideal-frame coordinates (arcsec) of sky positions seen through `aperture_name_` under `att`."""
    v2, v3 = tel_of(att, ra, dec)
    return tel_to_idl(aperture_name_, v2, v3)


def distance_outside(points: np.ndarray, polygon: np.ndarray) -> np.ndarray:
    """Distance of each point (N, 2) outside a convex-ish polygon (M, 2); 0 for points inside."""
    from matplotlib.path import Path as MplPath

    inside = MplPath(polygon).contains_points(points)
    out = np.zeros(len(points))
    pts = points[~inside]  # the distance is only needed outside
    d = np.full(len(pts), np.inf)
    for a, b in zip(polygon, np.roll(polygon, -1, axis=0), strict=True):
        ab = b - a
        t = np.clip(((pts - a) @ ab) / (ab @ ab), 0.0, 1.0)
        d = np.minimum(d, np.hypot(*(pts - (a + t[:, None] * ab)).T))
    out[~inside] = d
    return out


# --- tangent-plane helpers for plotting and synthetic footprints ------------------------------
def tangent_offsets(ra: Any, dec: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Gnomonic offsets (arcsec; x towards East, y towards North) of (ra, dec) about (ra0, dec0)."""
    ra, dec = np.deg2rad(np.asarray(ra, float)), np.deg2rad(np.asarray(dec, float))
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    cosc = np.sin(d0) * np.sin(dec) + np.cos(d0) * np.cos(dec) * np.cos(ra - a0)
    x = np.cos(dec) * np.sin(ra - a0) / cosc
    y = (np.cos(d0) * np.sin(dec) - np.sin(d0) * np.cos(dec) * np.cos(ra - a0)) / cosc
    return np.rad2deg(x) * 3600.0, np.rad2deg(y) * 3600.0


def from_tangent(x: Any, y: Any, ra0: float, dec0: float) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of `tangent_offsets`: sky (ra, dec) deg of gnomonic offsets x, y (arcsec)."""
    x = np.deg2rad(np.asarray(x, float) / 3600.0)
    y = np.deg2rad(np.asarray(y, float) / 3600.0)
    a0, d0 = np.deg2rad(ra0), np.deg2rad(dec0)
    rho = np.hypot(x, y)
    c = np.arctan(rho)
    with np.errstate(invalid="ignore", divide="ignore"):
        dec = np.arcsin(np.cos(c) * np.sin(d0) + np.where(rho > 0, y * np.sin(c) * np.cos(d0) / rho, 0.0))
    ra = a0 + np.arctan2(x * np.sin(c), rho * np.cos(d0) * np.cos(c) - y * np.sin(d0) * np.sin(c))
    return np.rad2deg(ra) % 360.0, np.rad2deg(dec)


def unit_vectors(ra: Any, dec: Any) -> np.ndarray:
    ra, dec = np.deg2rad(np.asarray(ra, float)), np.deg2rad(np.asarray(dec, float))
    return np.column_stack([np.cos(dec) * np.cos(ra), np.cos(dec) * np.sin(ra), np.sin(dec)])


def chord(arcsec: float) -> float:
    """Chord length on the unit sphere for an angular separation in arcsec (for KD-tree radii)."""
    return 2.0 * np.sin(np.deg2rad(arcsec / 3600.0) / 2.0)
