"""Which Image3 inputs overlap on the sky: the pair count the Image3 cost model needs (plan/cost.py).

tweakreg and skymatch test the footprints of every pair of inputs from different exposure groups for
overlap with spherical_geometry; a test of two overlapping footprints computes their intersection
polygon and costs ~20x one of two disjoint footprints (bench/bench_image3_cost.py counts them). Which
pairs overlap follows from the plan alone: the aperture outlines at the planned pointings (the same
SIAF corners `plan/grid.py` tiles the mosaic with). Exact for convex outlines (separating-axis test in
the tangent plane about the inputs' centre), after a sweep over bounding boxes so that a survey of
thousands of inputs costs O(N log N + overlapping pairs), not N^2.
"""

from __future__ import annotations

import numpy as np

from dream_hpc.core.workunit import WorkUnit


def group_key(u: WorkUnit) -> tuple:
    """jwst's exposure group (group_id): the detectors of one exposure form one group."""
    return (u.program, u.observation, u.visit, u.visit_group, u.sequence, u.activity, u.exposure)


def _outlines(units: list[WorkUnit]) -> np.ndarray:
    """(N, 4, 2) aperture corners in arcsec on the tangent plane about the inputs' mean position."""
    from dream_hpc.plan.footprint import outline_sky, tangent_offsets

    corners = [outline_sky(u.ra, u.dec, u.pa_v3, u.aperture) for u in units]
    ra = np.array([c[0] for c in corners])
    dec = np.array([c[1] for c in corners])
    vec = np.column_stack([np.cos(np.deg2rad(dec.ravel())) * np.cos(np.deg2rad(ra.ravel())),
                           np.cos(np.deg2rad(dec.ravel())) * np.sin(np.deg2rad(ra.ravel())),
                           np.sin(np.deg2rad(dec.ravel()))]).mean(axis=0)
    ra0 = float(np.rad2deg(np.arctan2(vec[1], vec[0])) % 360.0)
    dec0 = float(np.rad2deg(np.arctan2(vec[2], np.hypot(vec[0], vec[1]))))
    x, y = tangent_offsets(ra, dec, ra0, dec0)
    return np.stack([x, y], axis=-1)


def _separated(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """For pairs of convex quadrilaterals a[k], b[k] (K, 4, 2): True where some edge normal separates them."""
    sep = np.zeros(len(a), bool)
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=1) - poly
        normals = np.stack([-edges[..., 1], edges[..., 0]], axis=-1)  # (K, 4, 2)
        pa = np.einsum("kec,kvc->kev", normals, a)  # projections of every vertex on every normal
        pb = np.einsum("kec,kvc->kev", normals, b)
        sep |= ((pa.max(axis=2) < pb.min(axis=2)) | (pb.max(axis=2) < pa.min(axis=2))).any(axis=1)
    return sep


def overlapping_pairs(units: list[WorkUnit]) -> int:
    """Pairs of inputs in different exposure groups whose footprints overlap (touching counts as overlap)."""
    n = len(units)
    if n < 2:
        return 0
    poly = _outlines(units)
    lo, hi = poly.min(axis=1), poly.max(axis=1)
    groups = np.unique([hash(group_key(u)) for u in units], return_inverse=True)[1]
    order = np.argsort(lo[:, 0], kind="stable")
    # sweep along x: each input against the later-starting ones whose boxes begin before it ends
    starts = lo[order, 0]
    first, second = [], []
    for rank, i in enumerate(order):
        stop = int(np.searchsorted(starts, hi[i, 0], side="right"))
        js = order[rank + 1:stop]
        if len(js):
            js = js[(lo[js, 1] <= hi[i, 1]) & (hi[js, 1] >= lo[i, 1]) & (groups[js] != groups[i])]
            first.append(np.full(len(js), i))
            second.append(js)
    if not first:
        return 0
    i, j = np.concatenate(first), np.concatenate(second)
    return int(np.count_nonzero(~_separated(poly[i], poly[j])))
