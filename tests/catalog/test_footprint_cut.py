"""`catalog check`'s fast path (per-detector HEALPix candidates, the linear half-plane cut, the exact
outline test only near edges) against the brute force: every row tested exactly against every unit."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from astropy.table import Table

from dream_hpc.catalog import footprint_cut, reader
from dream_hpc.catalog.selection import GALAXY_EXTENT, on_outline, select_brute_force
from dream_hpc.catalog.survey_check import _key, check_catalog
from dream_hpc.config import load_config
from dream_hpc.plan import footprint, pointings

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_HPC_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("aperture", ["NRCA1_FULL", "NRCB5_FULL"])
def test_edge_cut_never_decides_against_the_exact_test(aperture: str) -> None:
    """Rows the cut calls on the outline are on it exactly; every row on it exactly is either called
    on it or sent to the exact test; and the cut decides most rows itself (else it would be no cut)."""
    ra0, dec0, pa = 150.1, 2.2, 37.0
    att = footprint.unit_attitude(ra0, dec0, pa, aperture)
    rng = np.random.default_rng(5)
    poly = footprint.outline_ideal(aperture)
    lo, hi = poly.min(axis=0) - 25.0, poly.max(axis=0) + 25.0
    n = 200_000
    x, y = rng.uniform(lo[0], hi[0], n), rng.uniform(lo[1], hi[1], n)
    ra, dec = footprint.sky_of(att, *footprint.idl_to_tel(aperture, x, y))
    vec = footprint.unit_vectors(ra, dec)
    is_star = rng.random(n) < 0.2
    radius = rng.uniform(0.05, 7.0, n).astype(np.float32)
    margin = 3.0
    allowed = margin + np.where(is_star, 0.0, GALAXY_EXTENT * radius)
    # the plane about a point a few arcmin away, as for the detectors at a visit's edge
    plane = footprint_cut.VisitPlane.about(footprint.unit_vectors([ra0 + 0.04], [dec0 - 0.03]))
    cut = footprint_cut.edge_cut(plane, aperture, att, margin + GALAXY_EXTENT * 7.0 + 1.0)
    assert cut is not None
    sure, maybe = cut.split(*plane.project(vec), allowed)
    exact = on_outline(aperture, *footprint_cut.tel_of_vectors(att, vec), is_star, radius, margin)
    assert exact[sure].all()
    assert not (exact & ~sure & ~maybe).any()
    assert exact.sum() > 0.3 * n and (~exact).sum() > 0.1 * n  # both sides are exercised
    assert maybe.mean() < 0.5


def _catalog(d: Path, n: int, half_width: float) -> tuple[Path, Path]:
    """A DREaM-layout pair with an is_star column, large galaxies and rows right on detector edges."""
    rng = np.random.default_rng(11)
    x, y = rng.uniform(-half_width, half_width, (2, n))
    ra, dec = footprint.from_tangent(x, y, 0.0, 0.0)
    main = Table()
    main["RA"] = np.where(ra > 180, ra - 360, ra)
    main["Dec"] = dec
    main["redshift"] = rng.uniform(0.3, 5.0, n)
    r_eff = rng.uniform(0.3, 4.0, n)
    r_eff[rng.random(n) < 0.002] = 60.0  # a few large galaxies (> prepared.LARGE_RADIUS_ARCSEC)
    main["R_eff"] = r_eff.astype(np.float32)
    main["q"] = rng.uniform(0.2, 1.0, n).astype(np.float32)
    main["n_s"] = rng.uniform(0.5, 4.0, n).astype(np.float32)
    main["PA"] = rng.uniform(0, np.pi, n).astype(np.float32)
    main["is_star"] = rng.random(n) < 0.15
    phot = Table()
    for f in ("F115W", "F150W", "F277W", "F444W"):
        phot[f"JWST_nircam_{f}"] = rng.uniform(20, 28, n).astype(np.float32)
    paths = d / "main.fits", d / "phot.fits"
    main.write(paths[0], overwrite=True)
    phot.write(paths[1], overwrite=True)
    return paths


def test_check_counts_equal_the_brute_force(tmp_path: Path) -> None:
    """Full-frame detectors (SW and LW, both modules), two filter pairs, dithers, a rolled mosaic:
    the check's per-filter counts of sources, stars and bright ones are the brute force's exactly."""
    data = yaml.safe_load((ROOT / "config" / "demo.yaml").read_text())
    main_path, phot_path = _catalog(tmp_path, 60_000, 420.0)
    data["catalog"].update(path=str(main_path), photometry=str(phot_path))
    data["pointings"].update(rows=1, cols=2, step_arcsec=[356.0, 131.0], pa_v3=23.0)
    data["pointings"]["dither"].update(points=2, step_arcsec=24.0)
    data["instrument"].update(detectors=["NRCA1", "NRCA5", "NRCB4"], subarray="FULL",
                              filter_pairs=[["F115W", "F277W"], ["F150W", "F444W"]])
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(path)
    units = pointings.make_plan(cfg)
    check = check_catalog(cfg, units)

    whole = reader.load_catalog(cfg)
    per_filter: dict[str, set[int]] = {}
    done: set[tuple] = set()
    for u in units:  # every unit, every row: no index, no cut
        if (_key(u), u.filter) in done:
            continue
        done.add((_key(u), u.filter))
        per_filter.setdefault(u.filter, set()).update(
            select_brute_force(whole, u, cfg.catalog.margin_arcsec).row.tolist())
    src = whole.sources
    pos = {int(r): i for i, r in enumerate(src.row)}
    expected = {}
    for f, rows in sorted(per_filter.items()):
        i = np.array([pos[r] for r in rows], int)
        expected[f] = {"sources": len(i), "stars": int(src.is_star[i].sum()), "bright": int((src.mags[f][i] < 24).sum())}
    assert check.per_filter == expected
    assert check.n_in_footprint == len(set().union(*per_filter.values()))
    assert all(c["stars"] > 0 and c["sources"] > 1000 for c in expected.values())
