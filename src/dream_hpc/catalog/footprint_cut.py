"""A detector outline as linear half-planes: most rows decided without per-row trigonometry.

`catalog check` tests ~10^7 rows against ~10^4 detector outlines. The exact test (each row through
the unit's attitude to telescope V2/V3, an arctan and an arcsin per row, then its distance outside
the outline, `selection.on_outline`) is kept, but only for the rows where it can matter: those near
an edge. How:

- a visit's rows get plane coordinates once (`VisitPlane`: an orthographic projection about the
  visit's centre, linear in the rows' unit vectors);
- per detector (`edge_cut`), an affine map from that plane to the aperture's ideal frame is fitted
  on a grid of points pushed through the exact chain, and its largest error on the grid is measured;
  each edge of the (convex) outline then becomes a half-plane in the visit plane;
- a row more than `PAD_ARCSEC` (+ 10 x that error) inside every edge is on the detector (the exact
  test gives it distance 0); a row more than its own allowance (margin, + 2 Re for a galaxy) + pad
  outside one edge is off it (a convex outline lies inside each of its half-planes); only the rows
  in between get the exact test.

So the selection is the exact test's, row for row, at a fraction of its cost
(tests/catalog/test_footprint_cut.py checks both against the brute force).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dream_hpc.plan import footprint

PAD_ARCSEC = 0.5  # far above the affine map's error (~1e-4" over a detector), far below a detector
MAX_FIT_ERROR_ARCSEC = 0.05  # beyond this (a footprint near a pole, a huge aperture) use the exact test only
GRID = 5  # points per axis of the fitting grid


def tel_of_vectors(att: np.ndarray, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(v2, v3) arcsec of sky unit vectors (N, 3) under `att`: pysiaf's getv2v3 without its per-call trig."""
    uv = vec @ att  # = (att^T . v) for every row
    norm = np.sqrt((uv**2).sum(axis=1))
    return 3600.0 * np.degrees(np.arctan2(uv[:, 1], uv[:, 0])), 3600.0 * np.degrees(np.arcsin(uv[:, 2] / norm))


@dataclass(frozen=True)
class VisitPlane:
    """Orthographic plane coordinates (radians; x East, y North) about a centre: linear in unit vectors."""

    basis: np.ndarray  # (3, 2): columns East, North at the centre

    @classmethod
    def about(cls, vectors: np.ndarray) -> VisitPlane:
        c = np.asarray(vectors, float).reshape(-1, 3).mean(axis=0)
        c /= np.linalg.norm(c)
        east = np.cross([0.0, 0.0, 1.0], c)
        if np.linalg.norm(east) < 1e-9:  # at a pole any East will do
            east = np.cross([0.0, 1.0, 0.0], c)
        east /= np.linalg.norm(east)
        return cls(basis=np.column_stack([east, np.cross(c, east)]))

    def project(self, vec: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # column by column (why: numpy's matmul of (N, 3) by (3, 2) takes a slow non-BLAS loop)
        e, n = self.basis[:, 0], self.basis[:, 1]
        x, y, z = vec[:, 0], vec[:, 1], vec[:, 2]
        return x * e[0] + y * e[1] + z * e[2], x * n[0] + y * n[1] + z * n[2]


@dataclass(frozen=True)
class EdgeCut:
    """Signed distances (arcsec, positive inside) to each outline edge, as s_k = a_k x + b_k y + c_k
    of visit-plane coordinates; `pad` covers the affine map's error."""

    a: np.ndarray
    b: np.ndarray
    c: np.ndarray
    pad: float

    def split(self, x: np.ndarray, y: np.ndarray, allowed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(surely on the outline, needs the exact test) masks for rows at plane (x, y) with allowance `allowed`."""
        s = self.a[0] * x + self.b[0] * y + self.c[0]
        for k in range(1, len(self.a)):
            s = np.minimum(s, self.a[k] * x + self.b[k] * y + self.c[k])
        inside = s >= self.pad
        return inside, ~inside & (s >= -(allowed + self.pad))


def _convex_orientation(poly: np.ndarray) -> float:
    """+1 / -1 for a convex counter-clockwise / clockwise polygon, 0 if it is not convex."""
    d = np.roll(poly, -1, axis=0) - poly
    cross = d[:, 0] * np.roll(d, -1, axis=0)[:, 1] - d[:, 1] * np.roll(d, -1, axis=0)[:, 0]
    if np.all(cross > 0):
        return 1.0
    if np.all(cross < 0):
        return -1.0
    return 0.0


def edge_cut(plane: VisitPlane, ap: str, att: np.ndarray, grow_arcsec: float) -> EdgeCut | None:
    """The half-planes of aperture `ap` under attitude `att`, valid within `grow_arcsec` of its outline;
    None when they cannot be trusted (non-convex outline, affine map too far off): use the exact test."""
    poly = footprint.outline_ideal(ap)
    orient = _convex_orientation(poly)
    if not orient:
        return None
    lo, hi = poly.min(axis=0) - grow_arcsec - PAD_ARCSEC, poly.max(axis=0) + grow_arcsec + PAD_ARCSEC
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], GRID), np.linspace(lo[1], hi[1], GRID))
    ra, dec = footprint.sky_of(att, *footprint.idl_to_tel(ap, gx.ravel(), gy.ravel()))
    vec = footprint.unit_vectors(ra, dec)
    # fit to the forward chain the exact test uses (not to the grid it started from)
    ix, iy = footprint.tel_to_idl(ap, *tel_of_vectors(att, vec))
    px, py = plane.project(vec)
    design = np.column_stack([px, py, np.ones_like(px)])
    cx = np.linalg.lstsq(design, ix, rcond=None)[0]
    cy = np.linalg.lstsq(design, iy, rcond=None)[0]
    err = float(max(np.abs(design @ cx - ix).max(), np.abs(design @ cy - iy).max()))
    if not np.isfinite(err) or err > MAX_FIT_ERROR_ARCSEC:
        return None
    a, b, c = [], [], []
    for p, q in zip(poly, np.roll(poly, -1, axis=0), strict=True):
        d = q - p
        n = orient * np.array([-d[1], d[0]]) / np.hypot(*d)  # inward unit normal
        # s = n . ((X, Y) - p) with X = cx . (x, y, 1), Y = cy . (x, y, 1)
        a.append(n[0] * cx[0] + n[1] * cy[0])
        b.append(n[0] * cx[1] + n[1] * cy[1])
        c.append(n[0] * cx[2] + n[1] * cy[2] - n @ p)
    return EdgeCut(np.array(a), np.array(b), np.array(c), pad=PAD_ARCSEC + 10.0 * err)
