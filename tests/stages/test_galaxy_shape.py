"""One known elliptical galaxy from a DREaM-layout pair, through real Mirage, Detector1 and Image2:
its axis ratio, orientation and semi-major size measured in the `_cal` image.

The catalog is DREaM's layout with the other photometry spelling (JWST_NIRCam_F150W; the demo's mock
writes JWST_nircam_): R_eff in kpc, q, PA in radians, centred on (0, 0) and recentred onto the
survey. A radius circularised as sqrt(q) R_eff, a PA left in radians or measured from the wrong
axis, or an ellipticity of q instead of 1 - q each fails here.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from _chain_fixtures import cli, demo_like

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

Q, PA_DEG, R_EFF_ARCSEC, Z, MAG = 0.4, 30.0, 0.5, 0.5, 18.0


def adaptive_moments(img: np.ndarray, x0: float, y0: float, sigma0: float = 8.0) -> tuple[np.ndarray, float, float]:
    """Elliptical-Gaussian-weighted second moments, iterated to the source's own shape (weight = 2 x moments).

    For a profile with elliptical isophotes the converged tensor has exactly the isophotes' axis
    ratio and orientation, and the weight keeps noise far from the centre out."""
    yy, xx = np.mgrid[0:img.shape[0], 0:img.shape[1]].astype(float)
    w_cov = np.eye(2) * sigma0**2
    m = w_cov
    for _ in range(100):
        dx, dy = xx - x0, yy - y0
        inv = np.linalg.inv(w_cov)
        r2 = inv[0, 0] * dx**2 + 2 * inv[0, 1] * dx * dy + inv[1, 1] * dy**2
        f = img * np.exp(-0.5 * r2) * (r2 < 25.0)
        s = f.sum()
        x0, y0 = x0 + (f * dx).sum() / s, y0 + (f * dy).sum() / s
        dx, dy = xx - x0, yy - y0
        m = np.array([[(f * dx * dx).sum(), (f * dx * dy).sum()], [(f * dx * dy).sum(), (f * dy * dy).sum()]]) / s
        new = 2.0 * m
        if np.allclose(new, w_cov, rtol=1e-6):
            break
        w_cov = new
    return m, x0, y0


def shape(m_sky: np.ndarray) -> tuple[float, float, float]:
    """(b/a, PA of the major axis in deg East of North, sqrt of the major eigenvalue) of an (east, north) tensor."""
    vals, vecs = np.linalg.eigh(m_sky)
    east, north = vecs[:, 1]
    return float(np.sqrt(vals[0] / vals[1])), float(np.rad2deg(np.arctan2(east, north)) % 180.0), float(np.sqrt(vals[1]))


def test_one_elliptical_galaxy_keeps_its_shape(tmp_path: Path, kit: Path) -> None:
    from astropy.cosmology import Planck18
    from astropy.modeling.models import Sersic2D
    from astropy.table import Table
    from stdatamodels.jwst import datamodels

    from dream_hpc.catalog.reader import recenter
    from dream_hpc.config import load_config
    from dream_hpc.plan import pointings

    cfg_dict = demo_like(kit, tmp_path / "DREaM_main.fits",
                         pointings={"rows": 1, "cols": 1, "dither": {"points": 1, "step_arcsec": 0.0, "pattern": "line"}},
                         instrument={"detectors": ["NRCB1"], "readout": {"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1}},
                         # the shape and place Mirage is given, in the header's frame: no pointing error
                         simulation={"pointing_error": {"enabled": False}})
    config = tmp_path / "survey.yaml"
    config.write_text(yaml.safe_dump(cfg_dict, sort_keys=False))
    cfg = load_config(config)
    (unit,) = pointings.make_plan(cfg)
    # the galaxy 1" off the unit's reference point, written in DREaM's frame (centred on 0, 0)
    ra_sky, dec_sky = unit.ra + 1.0 / 3600 / np.cos(np.deg2rad(unit.dec)), unit.dec + 0.5 / 3600
    ra0, dec0 = recenter(np.array([ra_sky]), np.array([dec_sky]), (cfg.pointings.center_ra, cfg.pointings.center_dec),
                         cfg.catalog.recenter_from)
    kpc = R_EFF_ARCSEC / Planck18.arcsec_per_kpc_proper(Z).value
    Table({"RA": ra0 - 360.0 * (ra0 > 180), "Dec": dec0, "redshift": [Z], "R_eff": [kpc], "q": [Q], "n_s": [1.0],
           "PA": [np.deg2rad(PA_DEG)], "M_halo": [12.0], "M_gal": [10.5], "logpsi": [0.0]}).write(tmp_path / "DREaM_main.fits")
    Table({"JWST_NIRCam_F150W": [MAG], "JWST_NIRCam_F277W": [MAG]}).write(tmp_path / "DREaM_main_photometry.fits")

    run = tmp_path / "run"
    proc = cli(["run", str(config), "--out", str(run), "--no-mosaic"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
    (cal,) = sorted((run / "exposures").rglob("*_cal.fits"))
    with datamodels.open(cal) as model:
        sci = np.array(model.data, float)
        dq = np.array(model.dq)
        wcs = model.meta.wcs
        x_in, y_in = (float(v) for v in wcs.world_to_pixel_values(ra_sky, dec_sky))
        # local Jacobian pixel -> (east, north) arcsec at the galaxy: the moments in sky axes
        cosd = np.cos(np.deg2rad(dec_sky))
        jac = np.zeros((2, 2))
        for k, (ddx, ddy) in enumerate(((1.0, 0.0), (0.0, 1.0))):
            r1, d1 = wcs(x_in + ddx, y_in + ddy)
            r0, d0 = wcs(x_in - ddx, y_in - ddy)
            jac[:, k] = [(r1 - r0) * cosd * 3600 / 2, (d1 - d0) * 3600 / 2]
    good = np.isfinite(sci) & (dq & 1 == 0)
    sci = np.where(good, sci - np.median(sci[good]), 0.0)
    m_pix, xc, yc = adaptive_moments(sci, x_in, y_in)
    assert np.hypot(xc - x_in, yc - y_in) < 1.0  # it is where the catalog put it
    q, pa, size = shape(jac @ m_pix @ jac.T)

    # the same measurement on the catalog's galaxy drawn exactly (no PSF, no pixels' distortion)
    scale = 0.031
    grid = (np.arange(400) - 200) * scale
    east, north = np.meshgrid(grid, grid)
    model = Sersic2D(amplitude=1.0, r_eff=R_EFF_ARCSEC, n=1.0, x_0=0, y_0=0, ellip=1 - Q,
                     theta=np.deg2rad(90.0 - PA_DEG))(east, north)
    m_model, *_ = adaptive_moments(model, 200.0, 200.0)
    q_model, pa_model, size_model = shape(m_model * scale**2)
    assert q_model == pytest.approx(Q, abs=0.01) and pa_model == pytest.approx(PA_DEG, abs=0.5)

    assert q == pytest.approx(Q, abs=0.05), (q, pa, size)
    assert abs((pa - PA_DEG + 90) % 180 - 90) < 3.0, (q, pa, size)
    # semi-major r_eff, not circularised (that would be sqrt(0.4) = 0.63 times smaller)
    assert size == pytest.approx(size_model, rel=0.1), (size, size_model)
