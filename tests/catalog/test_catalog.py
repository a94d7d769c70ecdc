"""The catalog: reading (FITS/HDF5/ECSV), bad rows, spatial selection, Mirage lists, the DREaM-like mock."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from astropy.table import Table

from dream_hpc.catalog import reader
from dream_hpc.catalog import synth as catalog_synth
from dream_hpc.catalog.selection import select_brute_force, select_for_unit, write_mirage_catalogs
from dream_hpc.catalog.survey_check import check_catalog
from dream_hpc.config import load_config
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.plan import footprint, pointings

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "data" / "small_survey.yaml"  # the SUB400P demo of sessions 1-3 (the numbers below)


# A COSMOS2020-like single table in its own names and units, read through the column map (the
# defaults are DREaM's names and units: tests/test_catalog_dream.py).
LEGACY = {"columns": {"id": "ID", "ra": "RA", "dec": "DEC", "redshift": "redshift", "mag": "NRC_{filter}",
                      "sersic": "sersic_n", "radius": "Re_arcsec", "axis_ratio": "axis_ratio",
                      "position_angle": "PA", "is_star": "is_star"},
          "photometry": "", "radius_unit": "arcsec", "pa_unit": "deg", "recenter": False}


def config(tmp_path: Path, catalog_path: Path, legacy: bool = True, **sections: dict[str, Any]) -> Any:
    data = yaml.safe_load(DEMO.read_text())
    if legacy:
        data["catalog"].update(LEGACY)
    data["catalog"]["path"] = str(catalog_path)
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


def small_table(n: int = 200, seed: int = 1, ra0: float = 150.1163, dec0: float = 2.2010) -> Table:
    """A DREaM-named table of n galaxies and stars scattered over ~1' around (ra0, dec0)."""
    rng = np.random.default_rng(seed)
    t = Table()
    t["ID"] = np.arange(1, n + 1) * 1000  # ids are not row numbers
    t["RA"] = ra0 + rng.uniform(-0.01, 0.01, n) / np.cos(np.deg2rad(dec0))
    t["DEC"] = dec0 + rng.uniform(-0.01, 0.01, n)
    t["redshift"] = rng.uniform(0.2, 4.0, n)
    t["NRC_F150W"] = rng.uniform(20, 27, n)
    t["NRC_F277W"] = t["NRC_F150W"] - 0.3
    t["sersic_n"] = rng.uniform(0.5, 4, n)
    t["Re_arcsec"] = rng.uniform(0.05, 0.5, n)
    t["axis_ratio"] = rng.uniform(0.2, 1.0, n)
    t["PA"] = rng.uniform(0, 180, n)
    t["is_star"] = rng.uniform(size=n) < 0.3
    return t


# --- the mock --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def big_mock(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Table, list[WorkUnit]]:
    """A mock over one full LW detector plus 60" (~17 arcmin^2, ~7000 galaxies)."""
    d = tmp_path_factory.mktemp("mock")
    cfg = config(d, d / "mock.ecsv", instrument={"detectors": ["NRCB5"], "subarray": "FULL"},
                 pointings={"rows": 1, "cols": 1, "dither": {"points": 1, "step_arcsec": 0.0, "pattern": "line"}},
                 catalog={"synth": {"mag_limit": 29.0, "margin_arcsec": 60.0, "density_scale": 1.0,
                                    "star_density_arcmin2": 5.0, "star_mag_range": [18.0, 24.0]}})
    units = pointings.make_plan(cfg)
    return cfg, catalog_synth.synthesize(cfg, units), units


def test_mock_counts_follow_the_intended_slope(big_mock: tuple) -> None:
    cfg, table, _ = big_mock
    gal = ~np.asarray(table["is_star"])
    m = np.asarray(table["NRC_F150W"])[gal]
    area_deg2 = table.meta["area_arcmin2"] / 3600.0
    edges = np.arange(22.0, 28.01, 0.5)
    counts, _ = np.histogram(m, edges)
    centres = 0.5 * (edges[1:] + edges[:-1])
    slope, _ = np.polyfit(centres, np.log10(counts), 1, w=np.sqrt(counts))
    assert slope == pytest.approx(catalog_synth.COUNT_SLOPE_FAINT, abs=0.03)
    expected = catalog_synth.expected_galaxies(area_deg2, 22.0, 28.0)
    assert counts.sum() == pytest.approx(expected, rel=0.06)  # normalisation (Poisson ~1.3% here)
    stars = np.asarray(table["is_star"])
    assert stars.sum() == pytest.approx(5.0 * table.meta["area_arcmin2"], abs=4 * np.sqrt(5.0 * table.meta["area_arcmin2"]))
    assert np.all((np.asarray(table["NRC_F150W"])[stars] >= 18) & (np.asarray(table["NRC_F150W"])[stars] <= 24))


def test_mock_galaxies_look_like_galaxies(big_mock: tuple) -> None:
    _, table, _ = big_mock
    gal = ~np.asarray(table["is_star"])
    f150, f277 = np.asarray(table["NRC_F150W"])[gal], np.asarray(table["NRC_F277W"])[gal]
    colour = f277 - f150
    assert -1.2 < np.median(colour) < 0.2 and np.std(colour) > 0.1  # redder filters mostly brighter, with scatter
    re = np.asarray(table["Re_arcsec"])[gal]
    assert np.median(re[f150 < 23]) > 1.5 * np.median(re[f150 > 27])  # size-magnitude relation
    n = np.asarray(table["sersic_n"])[gal]
    assert 0.55 < np.mean(n < 2) < 0.95 and np.any(n > 3)  # disks and bulges
    q = np.asarray(table["axis_ratio"])[gal]
    assert q.min() > 0 and q.max() <= 1
    z = np.asarray(table["redshift"])[gal]
    assert np.median(z[f150 > 27]) > np.median(z[f150 < 23])


def test_mock_is_seeded_by_the_survey_seed(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "a.ecsv")
    units = pointings.make_plan(cfg)
    a, b = catalog_synth.synthesize(cfg, units), catalog_synth.synthesize(cfg, units)
    assert len(a) == len(b) and np.array_equal(a["RA"], b["RA"]) and np.array_equal(a["NRC_F150W"], b["NRC_F150W"])
    other = config(tmp_path, tmp_path / "a.ecsv", survey={"seed": 99})
    c = catalog_synth.synthesize(other, units)
    assert len(c) != len(a) or not np.array_equal(a["RA"], c["RA"])


@pytest.mark.parametrize("suffix", [".ecsv", ".fits", ".h5"])
def test_formats_round_trip_and_are_detected(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"cat{suffix}"
    cfg = config(tmp_path, path)
    table = small_table()
    catalog_synth.write_table(table, path, cfg)
    sources = reader.load_catalog(cfg).sources
    assert len(sources) == len(table)
    assert np.allclose(sources.ra, table["RA"]) and np.array_equal(sources.id, table["ID"])
    assert np.allclose(sources.mags["F150W"], table["NRC_F150W"], atol=1e-5)
    # the content decides when the suffix does not tell
    odd = tmp_path / "catalog.dat"
    odd.write_bytes(path.read_bytes())
    assert reader.detect_format(odd) == {".ecsv": "ecsv", ".fits": "fits", ".h5": "hdf5"}[suffix]


# --- bad input -------------------------------------------------------------------------------
def test_bad_rows_are_counted_per_reason_and_skipped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    t = small_table(100)
    t["is_star"][:10] = False
    t["RA"][0] = np.nan
    t["NRC_F150W"][1] = np.nan
    t["Re_arcsec"][2] = -0.3
    t["axis_ratio"][3] = 1.5
    t["sersic_n"][4] = 0.0
    t["NRC_F277W"][5] = -99.0  # a placeholder, not a source
    t["sersic_n"][6] = np.nan
    t["NRC_F150W"][7] = 99.0  # undetected in F150W: kept, but not given to Mirage in F150W
    path = tmp_path / "bad.ecsv"
    t.write(path)
    cfg = config(tmp_path, path)
    with caplog.at_level("WARNING", logger="dream_hpc.catalog"):
        cat = reader.load_catalog(cfg)
    r = cat.report
    assert r.n_rows == 100 and r.n_bad == 7 and r.n_good == 93
    assert r.reasons == {"non-finite position": 1, "NaN magnitude": 1, "radius <= 0": 1,
                         "axis ratio outside (0, 1]": 1, "Sersic index outside 0.1..10": 1,
                         "magnitude brighter than 5 AB": 1, "NaN morphology": 1}
    warnings = [rec.getMessage() for rec in caplog.records]
    assert len(warnings) == 1 and "\n" not in warnings[0] and "skipped 7 bad rows" in warnings[0]
    assert 7 in cat.sources.row and np.isinf(cat.sources.mags["F150W"][cat.sources.row == 7][0])
    assert reader.load_catalog(cfg) is cat  # read once per process


def test_missing_file_and_column_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(reader.CatalogError) as err:
        reader.load_catalog(config(tmp_path, tmp_path / "nowhere.ecsv"))
    assert "catalog.path" in str(err.value) and "nowhere.ecsv" in str(err.value) and "\n" not in str(err.value)
    t = small_table()
    t.rename_column("Re_arcsec", "Re_kpc")
    t.write(tmp_path / "cols.ecsv")
    with pytest.raises(reader.CatalogError) as err:
        reader.load_catalog(config(tmp_path, tmp_path / "cols.ecsv"))
    msg = str(err.value)
    assert "catalog.columns.radius" in msg and "'Re_arcsec'" in msg and "Re_kpc" in msg and "\n" not in msg
    small_table().write(tmp_path / "ok.ecsv")
    cfg = config(tmp_path, tmp_path / "ok.ecsv", instrument={"filter_pairs": [["F115W", "F277W"]]})
    with pytest.raises(reader.CatalogError, match=r"catalog.columns.mag: column 'NRC_F115W' \(for F115W\)"):
        reader.load_catalog(cfg)


@pytest.mark.filterwarnings("ignore:File may have been truncated")
def test_truncated_fits_is_a_one_line_error(tmp_path: Path) -> None:
    path = tmp_path / "cat.fits"
    small_table(2000).write(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(reader.CatalogError) as err:
        reader.load_catalog(config(tmp_path, path))
    assert "not a readable FITS table" in str(err.value) and "\n" not in str(err.value)


def test_no_sources_in_the_footprint_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "far.ecsv"
    small_table(ra0=10.0, dec0=-30.0).write(path)
    cfg = config(tmp_path, path)
    with pytest.raises(reader.CatalogError) as err:
        check_catalog(cfg, pointings.make_plan(cfg))
    assert "no sources in the survey footprint" in str(err.value) and "\n" not in str(err.value)
    from dream_hpc.cli import main

    assert main(["catalog", "check", str(cfg.source)]) == 2


def test_dream_units_kpc_and_recentring(tmp_path: Path) -> None:
    """DREaM as distributed: centred on RA = Dec = 0, semi-major half-light radii in kpc."""
    t = small_table(ra0=0.0, dec0=0.0)
    t["RA"] = np.where(t["RA"] < 0, t["RA"] + 360.0, t["RA"])
    from astropy.cosmology import Planck18

    kpc_per_arcsec = 1.0 / Planck18.arcsec_per_kpc_proper(np.asarray(t["redshift"])).value
    t["Re_arcsec"] = np.asarray(t["Re_arcsec"]) * kpc_per_arcsec
    t.write(tmp_path / "dream.ecsv")
    cfg = config(tmp_path, tmp_path / "dream.ecsv", catalog={**LEGACY, "radius_unit": "kpc", "recenter": True})
    s = reader.load_catalog(cfg).sources
    assert abs(np.median(s.ra) - 150.1163) < 0.002 and abs(np.median(s.dec) - 2.2010) < 0.002
    gal = ~s.is_star
    assert np.allclose(s.radius[gal], np.asarray(small_table(ra0=0.0, dec0=0.0)["Re_arcsec"])[gal], rtol=2e-3)
    x, y = footprint.tangent_offsets(s.ra, s.dec, 150.1163, 2.2010)  # geometry kept: ~72" wide
    assert 60 < np.ptp(x) < 75 and 60 < np.ptp(y) < 75


# --- spatial selection -----------------------------------------------------------------------
def _random_catalog(n: int, ra0: float, dec0: float, radius_deg: float, seed: int) -> reader.Catalog:
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-radius_deg, radius_deg, (2, n)) * 3600
    ra, dec = footprint.from_tangent(x, y, ra0, dec0)
    star = rng.uniform(size=n) < 0.5
    f32 = np.float32
    s = reader.Sources(row=np.arange(n), id=np.arange(n), ra=ra, dec=dec, redshift=np.zeros(n, f32),
                        sersic=np.ones(n, f32), radius=rng.uniform(0.05, 1.0, n).astype(f32),
                        axis_ratio=np.ones(n, f32), pa=np.zeros(n, f32), is_star=star,
                        mags={"F150W": np.full(n, 22, f32)})
    return reader.Catalog(path=Path("random"), sources=s, report=reader.RowReport(path="random"))


@pytest.mark.parametrize("ra0, dec0", [(150.1163, 2.2010), (0.01, -5.0), (359.99, 45.0), (30.0, 88.0)])
def test_spatial_selection_equals_brute_force(ra0: float, dec0: float) -> None:
    cat = _random_catalog(30_000, ra0, dec0, 0.05, seed=int(ra0))
    rng = np.random.default_rng(7)
    for det, sub in (("NRCB1", "SUB400P"), ("NRCB5", "FULL"), ("NRCA3", "FULL"), ("NRCB1", "SUB640")):
        ra, dec = footprint.from_tangent(*rng.uniform(-60, 60, 2), ra0, dec0)
        unit = WorkUnit(program="01234", observation=1, visit=1, visit_group=1, sequence=1, activity=1, exposure=1,
                        detector=det, filter="F150W", pupil="CLEAR", subarray=sub, readpatt="RAPID", ngroups=2,
                        nints=1, ra=float(ra), dec=float(dec), pa_v3=float(rng.uniform(0, 360)),
                        date_obs="2024-01-01", time_obs="00:00:00")
        for margin in (0.0, 3.0):
            fast = select_for_unit(cat, unit, margin)
            slow = select_brute_force(cat, unit, margin)
            assert len(fast) > 0 and np.array_equal(fast.row, slow.row), (det, sub, margin)


def test_selected_stars_land_on_the_detector() -> None:
    """Independent check with pysiaf's own sky -> science-pixel transform (distortion included)."""
    cat = _random_catalog(20_000, 150.1, 2.2, 0.03, seed=5)
    unit = WorkUnit(program="01234", observation=1, visit=1, visit_group=1, sequence=1, activity=1, exposure=1,
                    detector="NRCB1", filter="F150W", pupil="CLEAR", subarray="FULL", readpatt="RAPID", ngroups=2,
                    nints=1, ra=150.1, dec=2.2, pa_v3=33.0, date_obs="2024-01-01", time_obs="00:00:00")
    ap = footprint.aperture("NRCB1_FULL")
    ap.set_attitude_matrix(footprint.unit_attitude(unit.ra, unit.dec, unit.pa_v3, "NRCB1_FULL"))
    stars = cat.sources.is_star
    x, y = ap.sky_to_sci(cat.sources.ra[stars], cat.sources.dec[stars])
    on_chip = (x > 0.5) & (x < 2048.5) & (y > 0.5) & (y < 2048.5)
    chosen = np.isin(cat.sources.row[stars], select_for_unit(cat, unit, 0.0).row)
    # agreement except within a fraction of a pixel of the edge (ideal-frame corners vs curved edges)
    edge = np.minimum.reduce([x - 0.5, 2048.5 - x, y - 0.5, 2048.5 - y])
    assert np.all(chosen[on_chip & (edge > 2)]) and not np.any(chosen[~on_chip & (edge < -2)])


# --- Mirage source lists ---------------------------------------------------------------------
def test_mirage_lists_follow_mirage_conventions(tmp_path: Path) -> None:
    path = tmp_path / "cat.ecsv"
    small_table(400).write(path)
    cfg = config(tmp_path, path)
    cat = reader.load_catalog(cfg)
    unit = next(u for u in pointings.make_plan(cfg) if u.detector == "NRCB5")
    sources = select_for_unit(cat, unit, cfg.catalog.margin_arcsec)
    out = write_mirage_catalogs(sources, unit, tmp_path / "lists")
    gal, pts = Table.read(out["galaxyListFile"], format="ascii"), Table.read(out["pointsource"], format="ascii")
    assert gal.colnames == ["index", "x_or_RA", "y_or_Dec", "radius", "ellipticity", "pos_angle", "sersic_index",
                            "nircam_f277w_magnitude"]
    assert pts.colnames == ["index", "x_or_RA", "y_or_Dec", "nircam_f277w_magnitude"]
    assert gal.meta["comments"][:3] == ["position_RA_Dec", "abmag", "radius_arcsec"]
    assert len(gal) + len(pts) == len(sources)
    assert len(set(gal["index"]) | set(pts["index"])) == len(gal) + len(pts)  # unique across both lists
    src = cat.sources.take(np.searchsorted(cat.sources.row, np.asarray(gal["index"]) - 1))
    assert np.allclose(gal["ellipticity"], 1 - src.axis_ratio, atol=1e-5)
    assert np.allclose(gal["radius"], src.radius, atol=1e-5)  # semi-major half-light radius, not circularized
    assert np.allclose(gal["x_or_RA"], src.ra, atol=1e-8)
    # a kind with no sources gets no file
    only_gal = sources.take(~sources.is_star)
    out2 = write_mirage_catalogs(only_gal, unit, tmp_path / "lists2")
    assert out2["pointsource"] is None and out2["galaxyListFile"] is not None
    assert [p.name for p in (tmp_path / "lists2").iterdir()] == [out2["galaxyListFile"].name]
