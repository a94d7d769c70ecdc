"""The distortion model (pysiaf's FULL-aperture polynomials) and the pixel areas it implies.

The transform is built the way STScI builds the NIRCam DISTORTION references from the SIAF:
0-based full-frame science pixels -> +1 (SIAF is 1-based) -> minus the reference pixel ->
Sci2Idl polynomial -> ideal frame (arcsec) -> parity/V3IdlYAngle rotation -> plus (V2Ref, V3Ref),
with the Idl2Sci polynomial as the inverse. jwst's assign_wcs uses it for pixel -> V2/V3, Mirage
uses its inverse (as the `astrometric` reference) to place sources: one model for both.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from dream_hpc.refkit.nircam import FULL, Detector, siaf

ARCSEC2_TO_SR = (math.pi / 180 / 3600) ** 2


@dataclass(frozen=True)
class Geometry:
    """What the kit needs from one detector's distortion."""

    aperture: str  # e.g. NRCB1_FULL
    model: object  # astropy.modeling Model: (x, y) 0-based science pixels -> (v2, v3) arcsec
    nominal_area_arcsec2: float  # |det J| of Sci2Idl at the reference pixel
    relative_area: np.ndarray  # (2048, 2048) float32: pixel area / nominal area

    @property
    def nominal_area_sr(self) -> float:
        return self.nominal_area_arcsec2 * ARCSEC2_TO_SR


def _poly_pair(coeffs_x: np.ndarray, coeffs_y: np.ndarray, degree: int):
    """SIAF coefficient vectors (k over total degree i, then j) -> two astropy Polynomial2D."""
    from astropy.modeling.models import Polynomial2D

    def named(coeffs: np.ndarray) -> dict[str, float]:
        out, k = {}, 0
        for i in range(degree + 1):
            for j in range(i + 1):  # SIAF term k multiplies x**(i-j) * y**j
                out[f"c{i - j}_{j}"] = float(coeffs[k])
                k += 1
        return out

    return Polynomial2D(degree, **named(coeffs_x)), Polynomial2D(degree, **named(coeffs_y))


def _rotation(parity: int, v3_idl_yang_deg: float, to_v2v3: bool):
    """The planar ideal <-> V2/V3 rotation (pysiaf's planar approximation), as two Polynomial2D."""
    from astropy.modeling.models import Polynomial2D

    a = math.radians(v3_idl_yang_deg)
    if to_v2v3:
        xc = {"c1_0": parity * math.cos(a), "c0_1": math.sin(a)}
        yc = {"c1_0": -parity * math.sin(a), "c0_1": math.cos(a)}
    else:
        xc = {"c1_0": parity * math.cos(a), "c0_1": -parity * math.sin(a)}
        yc = {"c1_0": math.sin(a), "c0_1": math.cos(a)}
    return Polynomial2D(1, c0_0=0.0, **xc), Polynomial2D(1, c0_0=0.0, **yc)


def distortion_model(det: Detector):
    """Invertible (x, y) 0-based FULL science pixels -> (v2, v3) arcsec model for `det`."""
    from astropy.modeling.models import Mapping, Shift

    ap = siaf()[f"{det.name}_FULL"]
    coeffs = ap.get_polynomial_coefficients()
    degree = int(ap.Sci2IdlDeg)
    sci2idl_x, sci2idl_y = _poly_pair(coeffs["Sci2IdlX"], coeffs["Sci2IdlY"], degree)
    idl2sci_x, idl2sci_y = _poly_pair(coeffs["Idl2SciX"], coeffs["Idl2SciY"], degree)
    sci2idl = Mapping((0, 1, 0, 1)) | sci2idl_x & sci2idl_y
    sci2idl.inverse = Mapping((0, 1, 0, 1)) | idl2sci_x & idl2sci_y
    fx, fy = _rotation(int(ap.VIdlParity), float(ap.V3IdlYAngle), to_v2v3=True)
    ix, iy = _rotation(int(ap.VIdlParity), float(ap.V3IdlYAngle), to_v2v3=False)
    idl2v2v3 = Mapping((0, 1, 0, 1)) | fx & fy
    idl2v2v3.inverse = Mapping((0, 1, 0, 1)) | ix & iy
    # 0-based pixel -> 1-based SIAF pixel -> offset from the reference pixel (XSciRef, YSciRef)
    to_ref = Shift(1.0 - float(ap.XSciRef)) & Shift(1.0 - float(ap.YSciRef))
    to_abs = Shift(float(ap.V2Ref)) & Shift(float(ap.V3Ref))
    model = to_ref | sci2idl | idl2v2v3 | to_abs
    model.name = f"{det.name}_FULL sci->v2v3 (pysiaf {ap.AperName})"
    return model


def nominal_area_arcsec2(det: Detector) -> float:
    """Pixel area at the reference pixel: the determinant of the linear Sci2Idl terms."""
    ap = siaf()[f"{det.name}_FULL"]
    c = ap.get_polynomial_coefficients()
    # k=1 is the x term, k=2 the y term (SIAF ordering)
    return abs(c["Sci2IdlX"][1] * c["Sci2IdlY"][2] - c["Sci2IdlX"][2] * c["Sci2IdlY"][1])


def relative_pixel_area(det: Detector) -> np.ndarray:
    """(2048, 2048) pixel areas / nominal area, from the distorted pixel corners (shoelace)."""
    ap = siaf()[f"{det.name}_FULL"]
    corners = np.arange(FULL + 1, dtype=np.float64) + 0.5  # 1-based SIAF coordinates of pixel edges
    x, y = np.meshgrid(corners, corners)
    xi, yi = ap.sci_to_idl(x, y)
    # quadrilateral (ll, lr, ur, ul) of every pixel
    x0, y0 = xi[:-1, :-1], yi[:-1, :-1]
    x1, y1 = xi[:-1, 1:], yi[:-1, 1:]
    x2, y2 = xi[1:, 1:], yi[1:, 1:]
    x3, y3 = xi[1:, :-1], yi[1:, :-1]
    area = 0.5 * np.abs((x0 * y1 - x1 * y0) + (x1 * y2 - x2 * y1) + (x2 * y3 - x3 * y2) + (x3 * y0 - x0 * y3))
    return (area / nominal_area_arcsec2(det)).astype(np.float32)


def geometry(det: Detector) -> Geometry:
    return Geometry(aperture=f"{det.name}_FULL", model=distortion_model(det),
                    nominal_area_arcsec2=nominal_area_arcsec2(det), relative_area=relative_pixel_area(det))


def max_offset_from_pysiaf(det: Detector, model=None, n: int = 7) -> tuple[float, float]:
    """Largest |model - pysiaf sci_to_tel| in arcsec over an n x n grid, and the largest
    round-trip (inverse then forward) pixel error: the numerical proof the model is right."""
    model = model or distortion_model(det)
    ap = siaf()[f"{det.name}_FULL"]
    g = np.linspace(0, FULL - 1, n)
    x, y = (a.ravel() for a in np.meshgrid(g, g))
    v2, v3 = model(x, y)
    v2s, v3s = ap.sci_to_tel(x + 1, y + 1)  # SIAF is 1-based
    sky = float(np.max(np.hypot(v2 - v2s, v3 - v3s)))
    xb, yb = model.inverse(v2, v3)
    pix = float(np.max(np.hypot(xb - x, yb - y)))
    return sky, pix
