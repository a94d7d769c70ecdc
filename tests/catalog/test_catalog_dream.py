"""DREaM as distributed: the main + photometry FITS pair in DREaM's names and units, its bad input,
the prepared (footprint-cut, spatially sorted) catalog and its per-unit lookups."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from astropy.table import Table

from dream_hpc.catalog import prepared, reader
from dream_hpc.catalog import synth as catalog_synth
from dream_hpc.catalog.selection import select_for_unit, write_mirage_catalogs
from dream_hpc.catalog.survey_check import check_catalog
from dream_hpc.config import load_config
from dream_hpc.plan import footprint, pointings

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "tests" / "data" / "small_survey.yaml"  # the SUB400P demo of sessions 1-3 (the numbers below)
CENTER = (150.1163, 2.2010)  # config/demo.yaml's pointings centre


@pytest.fixture(autouse=True)
def _own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_HPC_CACHE_DIR", str(tmp_path / "cache"))


def config(tmp_path: Path, main: Path, phot: Path | None, **catalog: Any) -> Any:
    """config/demo.yaml (DREaM's defaults, recenter on) reading the pair `main` + `phot`."""
    data = yaml.safe_load(DEMO.read_text())
    data["catalog"].update(path=str(main), photometry=str(phot) if phot else "", **catalog)
    path = tmp_path / "survey.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return load_config(path)


def dream_pair(d: Path, n: int = 400, spelling: str = "JWST_nircam_", seed: int = 3,
               half_width_arcsec: float = 40.0) -> tuple[Path, Path, Table, Table]:
    """A DREaM-layout pair on (0, 0): main (RA, Dec, redshift, R_eff kpc, q, n_s, PA rad, M_halo, M_gal,
    logpsi; no id column) and the row-aligned photometry table."""
    rng = np.random.default_rng(seed)
    x, y = rng.uniform(-half_width_arcsec, half_width_arcsec, (2, n))
    ra, dec = footprint.from_tangent(x, y, 0.0, 0.0)
    main = Table()
    main["RA"] = np.where(ra > 180, ra - 360, ra)  # DREaM's RA runs -0.5..0.5
    main["Dec"] = dec
    main["redshift"] = rng.uniform(0.3, 5.0, n)
    main["R_eff"] = rng.uniform(0.5, 4.0, n).astype(np.float32)  # physical kpc, semi-major
    main["q"] = rng.uniform(0.2, 1.0, n).astype(np.float32)
    main["n_s"] = rng.uniform(0.5, 4.0, n).astype(np.float32)
    main["PA"] = rng.uniform(0, np.pi, n).astype(np.float32)  # radians
    for name in ("M_halo", "M_gal", "logpsi"):
        main[name] = rng.normal(10, 1, n).astype(np.float32)
    phot = Table()
    for f in ("F115W", "F150W", "F200W", "F277W", "F356W", "F444W"):
        phot[f"{spelling}{f}"] = rng.uniform(20, 27, n).astype(np.float32)
    phot["JWST_miri_F770W"] = rng.uniform(20, 27, n).astype(np.float32)
    main_path, phot_path = d / "DREaM_main.fits", d / "DREaM_photometry.fits"
    main.write(main_path, overwrite=True)
    phot.write(phot_path, overwrite=True)
    return main_path, phot_path, main, phot


# --- reading DREaM's layout ------------------------------------------------------------------
@pytest.mark.parametrize("spelling", ["JWST_nircam_", "JWST_NIRCam_"])
def test_dream_pair_is_read_with_the_defaults(tmp_path: Path, spelling: str) -> None:
    main_path, phot_path, main, phot = dream_pair(tmp_path, spelling=spelling)
    cfg = config(tmp_path, main_path, phot_path)
    cat = reader.load_catalog(cfg)
    s = cat.sources
    assert len(s) == len(main) and cat.report.n_bad == 0
    assert np.array_equal(s.id, np.arange(1, len(main) + 1))  # no id column: the row number
    # magnitudes from the second table, row for row, whatever the case of its names
    assert np.allclose(s.mags["F150W"], phot[f"{spelling}F150W"]) and np.allclose(s.mags["F277W"], phot[f"{spelling}F277W"])
    # R_eff: physical kpc at the redshift -> arcsec (Planck18), along the semi-major axis (not circularised)
    from astropy.cosmology import Planck18

    expect = np.asarray(main["R_eff"]) * Planck18.arcsec_per_kpc_proper(np.asarray(main["redshift"])).value
    assert np.allclose(s.radius, expect, rtol=1e-3)
    assert np.allclose(s.pa, np.rad2deg(main["PA"]) % 360, atol=1e-4) and np.allclose(s.axis_ratio, main["q"])
    # recentred onto the survey centre as a rotation: offsets from the centre are kept
    x0, y0 = footprint.tangent_offsets(main["RA"], main["Dec"], 0.0, 0.0)
    x1, y1 = footprint.tangent_offsets(s.ra, s.dec, *CENTER)
    assert np.allclose(x0, x1, atol=1e-6) and np.allclose(y0, y1, atol=1e-6)
    assert cat.report.filters_available == ["F115W", "F150W", "F200W", "F277W", "F356W", "F444W"]
    assert cat.report.columns["mag:F150W"] == f"{phot_path.name}:{spelling}F150W"


def test_recenter_is_a_rotation_over_a_whole_dream_field() -> None:
    """A 1 deg^2 field moved from (0, 0) to COSMOS keeps every separation (DREaM's author's plain RA/Dec
    shift does not: at Dec 2.2 it stretches RA separations by 1/cos(dec))."""
    rng = np.random.default_rng(0)
    ra, dec = rng.uniform(-0.5, 0.5, (2, 500))
    ra2, dec2 = reader.recenter(ra, dec, (0.0, 0.0), CENTER)

    def sep(a: np.ndarray, d: np.ndarray) -> np.ndarray:
        v = footprint.unit_vectors(a, d)
        return np.arccos(np.clip(v[:250] @ v[250:].T, -1, 1))

    assert np.allclose(sep(ra, dec), sep(ra2, dec2), atol=1e-12)
    assert np.allclose(reader.recenter(ra2, dec2, CENTER, (0.0, 0.0))[1], dec, atol=1e-12)


def test_photometry_joined_on_an_id(tmp_path: Path) -> None:
    main_path, phot_path, main, phot = dream_pair(tmp_path, n=100)
    main["GalID"] = np.arange(100) * 7 + 3
    order = np.random.default_rng(1).permutation(100)[:95]  # shuffled, 5 galaxies without photometry
    joined = phot[order]
    joined["GalID"] = main["GalID"][order]
    main.write(main_path, overwrite=True)
    joined.write(phot_path, overwrite=True)
    cat = reader.load_catalog(config(tmp_path, main_path, phot_path, join_on="GalID"))
    assert cat.report.reasons == {"no photometry row (catalog.join_on)": 5} and len(cat.sources) == 95
    assert np.allclose(cat.sources.mags["F150W"], phot["JWST_nircam_F150W"][cat.sources.row])


def test_synth_writes_dreams_layout_and_it_reads_back(tmp_path: Path) -> None:
    cfg = config(tmp_path, tmp_path / "main.fits", tmp_path / "phot.fits")
    units = pointings.make_plan(cfg)
    table = catalog_synth.synthesize(cfg, units)
    written = catalog_synth.write_table(table, tmp_path / "main.fits", cfg)
    assert written == [tmp_path / "main.fits", tmp_path / "phot.fits"]
    main, phot = Table.read(written[0]), Table.read(written[1])
    assert {"RA", "Dec", "redshift", "R_eff", "q", "n_s", "PA"} <= set(main.colnames)
    assert "JWST_nircam_F150W" in phot.colnames and len(main) == len(phot)
    assert abs(np.median(main["RA"])) < 0.05 and abs(np.median(main["Dec"])) < 0.05  # on (0, 0), as DREaM
    gal = ~np.asarray(main["is_star"])
    assert np.all(np.abs(main["PA"][gal]) <= np.pi + 1e-6)  # radians
    s = reader.load_catalog(cfg).sources
    x, y = footprint.tangent_offsets(s.ra, s.dec, *CENTER)
    ra0, dec0, (x0, x1, y0, y1) = catalog_synth.footprint_box(units, cfg.catalog.synth.margin_arcsec)
    assert np.ptp(x) < (x1 - x0) + 1 and abs(np.median(s.ra) - ra0) < 0.01  # back on the survey field
    # the ECSV option: one hand-editable table
    single = catalog_synth.write_table(table, tmp_path / "one.ecsv", cfg, photometry="")
    assert Table.read(single[0]).colnames[-1] == "JWST_nircam_F444W" or "JWST_nircam_F150W" in Table.read(single[0]).colnames


def test_mirage_lists_from_dream_units(tmp_path: Path) -> None:
    """radius = semi-major arcsec (R_eff kpc at z), ellipticity = 1 - q, pos_angle = PA in degrees E of N."""
    main_path, phot_path, main, _ = dream_pair(tmp_path, n=600, half_width_arcsec=20)
    cfg = config(tmp_path, main_path, phot_path)
    cat = reader.load_catalog(cfg)
    unit = next(u for u in pointings.make_plan(cfg) if u.detector == "NRCB1")
    out = write_mirage_catalogs(select_for_unit(cat, unit, 3.0), unit, tmp_path / "lists")
    gal = Table.read(out["galaxyListFile"], format="ascii")
    rows = np.asarray(gal["index"]) - 1
    from astropy.cosmology import Planck18

    kpc = Planck18.arcsec_per_kpc_proper(np.asarray(main["redshift"])[rows]).value
    assert np.allclose(gal["radius"], np.asarray(main["R_eff"])[rows] * kpc, rtol=1e-3)
    assert np.allclose(gal["ellipticity"], 1 - np.asarray(main["q"])[rows], atol=1e-5)
    assert np.allclose(gal["pos_angle"], np.rad2deg(np.asarray(main["PA"])[rows]), atol=1e-3)


# --- bad input: one line naming the file, the column and the fix -----------------------------
def _one_line_error(cfg: Any) -> str:
    with pytest.raises(reader.CatalogError) as err:
        reader.load_catalog(cfg)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_photometry_with_another_row_count(tmp_path: Path) -> None:
    main_path, phot_path, _, phot = dream_pair(tmp_path)
    phot[:-3].write(phot_path, overwrite=True)
    msg = _one_line_error(config(tmp_path, main_path, phot_path))
    assert str(phot_path) in msg and "397 rows" in msg and "400" in msg and "catalog.join_on" in msg


def test_missing_survey_filter_column(tmp_path: Path) -> None:
    main_path, phot_path, _, phot = dream_pair(tmp_path)
    phot.remove_column("JWST_nircam_F277W")
    phot.write(phot_path, overwrite=True)
    msg = _one_line_error(config(tmp_path, main_path, phot_path))
    assert str(phot_path) in msg and "'JWST_nircam_F277W'" in msg and "F150W" in msg  # what it has
    assert "catalog.columns.mag" in msg and "filter_pairs" in msg


def test_pa_unit_mistakes(tmp_path: Path) -> None:
    main_path, phot_path, main, _ = dream_pair(tmp_path)
    main["PA"] = np.rad2deg(main["PA"])  # degrees in a file declared (by default) as radians
    main.write(main_path, overwrite=True)
    msg = _one_line_error(config(tmp_path, main_path, phot_path))
    assert "catalog.pa_unit" in msg and "'PA'" in msg and str(main_path) in msg and "pa_unit: deg" in msg
    assert len(reader.load_catalog(config(tmp_path, main_path, phot_path, pa_unit="deg")).sources) == 400
    main["PA"] = np.deg2rad(main["PA"])  # and radians declared as degrees
    main.write(main_path, overwrite=True)
    msg = _one_line_error(config(tmp_path, main_path, phot_path, pa_unit="deg"))
    assert "pa_unit: rad" in msg and str(main_path) in msg


def test_nan_and_negative_sizes_are_bad_rows(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    main_path, phot_path, main, _ = dream_pair(tmp_path)
    main["R_eff"][:3] = np.nan
    main["R_eff"][3:7] = -1.0
    main["redshift"][7] = 0.0  # kpc cannot become arcsec at z = 0
    main.write(main_path, overwrite=True)
    cfg = config(tmp_path, main_path, phot_path)
    with caplog.at_level("WARNING", logger="dream_hpc.catalog"):
        cat = reader.load_catalog(cfg)
    assert cat.report.reasons == {"NaN morphology": 3, "radius <= 0": 4, "redshift <= 0 (radius in kpc needs it)": 1}
    assert len(cat.sources) == 392 and not np.isin(np.arange(8), cat.sources.row).any()
    assert any("skipped 8 bad rows" in r.getMessage() for r in caplog.records)


def test_catalog_check_cli_reports_and_refuses_in_one_line(tmp_path: Path) -> None:
    main_path, phot_path, *_ = dream_pair(tmp_path)
    cfg = config(tmp_path, main_path, phot_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "DREAM_HPC_CACHE_DIR": str(tmp_path / "cache")}
    ok = subprocess.run([sys.executable, "-m", "dream_hpc", "catalog", "check", str(cfg.source)],
                        capture_output=True, text=True, env=env, cwd=ROOT)
    assert ok.returncode == 0, ok.stderr
    text = ok.stdout
    assert "400 rows, 400 usable" in text and "radius = DREaM_main.fits:R_eff" in text
    assert "filters in the catalog: F115W, F150W, F200W, F277W, F356W, F444W; the survey's: F150W, F277W" in text
    assert "sky area of the usable rows: " in text and "sources on the survey footprint" in text
    Table.read(phot_path)[:10].write(phot_path, overwrite=True)
    bad = subprocess.run([sys.executable, "-m", "dream_hpc", "catalog", "check", str(cfg.source)],
                         capture_output=True, text=True, env=env, cwd=ROOT)
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode == 2 and len(lines) == 1 and "row-aligned" in lines[0], bad.stderr


# --- the prepared catalog --------------------------------------------------------------------
def test_prepared_lookups_equal_the_whole_catalog(tmp_path: Path) -> None:
    """Per unit, the rows read through the index select exactly what the in-memory catalog selects."""
    main_path, phot_path, *_ = dream_pair(tmp_path, n=20_000, half_width_arcsec=150.0)
    cfg = config(tmp_path, main_path, phot_path, prepared_nside=16384)  # small cells: many per unit
    units = pointings.make_plan(cfg)
    result = prepared.prepare(cfg, units, tmp_path / "prep.h5", chunk_rows=3000)  # several chunks
    assert not result.reused and result.report.n_rows == 20_000
    prep = prepared.open_prepared(result.path)
    whole = reader.load_catalog(cfg)
    assert 0 < prep.n_rows < len(whole.sources)  # cut to the footprint (+ margin)
    for u in units:
        near = prep.near_unit(u, cfg.catalog.margin_arcsec)
        assert len(near.sources) < prep.n_rows  # reads a part, not the file
        a, b = select_for_unit(prep, u, cfg.catalog.margin_arcsec), select_for_unit(whole, u, cfg.catalog.margin_arcsec)
        assert len(a) and np.array_equal(np.sort(a.row), b.row), u.unit_id
        order = np.argsort(a.row)
        assert np.allclose(a.ra[order], b.ra) and np.allclose(a.mags["F150W"][order], b.mags["F150W"])
        assert np.allclose(a.radius[order], b.radius)
    # unchanged source and settings: reused; a changed source: prepared again
    assert prepared.prepare(cfg, units, tmp_path / "prep.h5").reused
    t = Table.read(main_path)
    t["q"][0] = 0.5
    t.write(main_path, overwrite=True)
    assert not prepared.prepare(cfg, units, tmp_path / "prep.h5").reused


def test_large_galaxies_reach_every_lookup(tmp_path: Path) -> None:
    """A galaxy with a 20" semi-major radius 30" off a SUB400P detector still puts light on it."""
    main_path, phot_path, main, phot = dream_pair(tmp_path, n=50, half_width_arcsec=5.0)
    units = pointings.make_plan(config(tmp_path, main_path, phot_path))
    u = units[0]
    x, y = footprint.tangent_offsets(u.ra, u.dec, *CENTER)
    ra, dec = footprint.from_tangent(x + 36.0, y, 0.0, 0.0)  # ~30" beyond the 6" half-width
    from astropy.cosmology import Planck18

    main.add_row({"RA": ra - 360 if ra > 180 else ra, "Dec": dec, "redshift": 0.5, "q": 0.9, "n_s": 1.0, "PA": 0.0,
                  "R_eff": 20.0 / Planck18.arcsec_per_kpc_proper(0.5).value, "M_halo": 0, "M_gal": 0, "logpsi": 0})
    phot.add_row(dict.fromkeys(phot.colnames, 20.0))
    main.write(main_path, overwrite=True)
    phot.write(phot_path, overwrite=True)
    cfg = config(tmp_path, main_path, phot_path)
    prep = prepared.open_prepared(prepared.prepare(cfg, units).path)
    assert prep.max_galaxy_radius == pytest.approx(20.0, rel=1e-3)
    sel = select_for_unit(prep, u, cfg.catalog.margin_arcsec)
    assert 50 in sel.row  # the 51st row


def test_check_counts_agree_with_the_in_memory_selection(tmp_path: Path) -> None:
    main_path, phot_path, *_ = dream_pair(tmp_path, n=3000, half_width_arcsec=60.0)
    cfg = config(tmp_path, main_path, phot_path)
    units = pointings.make_plan(cfg)
    check = check_catalog(cfg, units)
    whole = reader.load_catalog(cfg)
    rows = set()
    for u in units:
        rows |= set(select_for_unit(whole, u, cfg.catalog.margin_arcsec).row.tolist())
    assert check.n_in_footprint == len(rows) > 0
    assert check.area_deg2 == pytest.approx((120 / 3600) ** 2, rel=0.05)


@pytest.mark.parametrize("kind", ["int", "str"])
def test_an_id_repeated_in_two_chunks_is_refused(tmp_path: Path, kind: str) -> None:
    """Each chunk of the prepare pass holds unique ids; only the catalog-wide check sees row 7 and row
    4,500 (another chunk) share one. One line naming the column, the id, both rows and the fix."""
    main_path, phot_path, main, _ = dream_pair(tmp_path, n=6000, half_width_arcsec=60.0)
    ids = np.arange(1, 6001)
    ids[4500] = ids[7]
    main["ID"] = ids if kind == "int" else np.array([f"DREaM-{i:07d}" for i in ids])
    main.write(main_path, overwrite=True)
    cfg = config(tmp_path, main_path, phot_path)
    units = pointings.make_plan(cfg)
    with pytest.raises(reader.CatalogError) as e:
        prepared.prepare(cfg, units, tmp_path / "prep.h5", chunk_rows=1000)
    msg = str(e.value)
    assert "\n" not in msg and "catalog.columns.id" in msg and "'ID'" in msg and str(main_path) in msg
    assert "repeats 1 ids" in msg and "rows 7, 4500" in msg and "unique id" in msg
    assert repr(main["ID"][7].item() if kind == "int" else str(main["ID"][7])) in msg
    assert not (tmp_path / "prep.h5").exists()  # nothing half-written is left to be reused
    with pytest.raises(reader.CatalogError, match="rows 7, 4500"):  # the whole-file read says the same
        reader.load_catalog(cfg)
    ids[4500] = 6001  # unique again: prepared in chunks without complaint
    main["ID"] = ids if kind == "int" else np.array([f"DREaM-{i:07d}" for i in ids])
    main.write(main_path, overwrite=True)
    assert prepared.prepare(cfg, units, tmp_path / "prep.h5", chunk_rows=1000).report.n_rows == 6000


def test_sampled_positions_keep_the_density(tmp_path: Path) -> None:
    """A bounded subsample of the prepared rows, weighted, gives every region's count within noise."""
    main_path, phot_path, *_ = dream_pair(tmp_path, n=20_000, half_width_arcsec=150.0)
    cfg = config(tmp_path, main_path, phot_path)
    prep = prepared.open_prepared(prepared.prepare(cfg, pointings.make_plan(cfg), tmp_path / "p.h5").path)
    everything = prep.everything().sources
    ra, dec, weight = prep.sample_positions(max_rows=2000)
    assert len(ra) <= 2000 and weight * len(ra) == pytest.approx(prep.n_rows)
    # four quadrants about the median position: weighted sample counts against the true counts
    ra0, dec0 = np.median(everything.ra), np.median(everything.dec)
    for east in (True, False):
        for north in (True, False):
            true = np.sum(((everything.ra > ra0) == east) & ((everything.dec > dec0) == north))
            got = weight * np.sum(((ra > ra0) == east) & ((dec > dec0) == north))
            assert got == pytest.approx(true, rel=0.12), (east, north)


def test_plan_out_never_loads_the_whole_catalog(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`plan --out` draws the density from the prepared catalog (written once to the user cache,
    then reused), not from the whole catalog in memory."""
    from dream_hpc.cli import main

    main_path, phot_path, *_ = dream_pair(tmp_path, n=3000, half_width_arcsec=60.0)
    cfg = config(tmp_path, main_path, phot_path)

    def whole(*_a: Any, **_k: Any) -> None:
        raise AssertionError("plan --out loaded the whole catalog")

    monkeypatch.setattr(reader, "load_catalog", whole)
    assert main(["plan", str(cfg.source), "--out", str(tmp_path / "run")]) == 0
    assert (tmp_path / "run" / "figures" / "footprint.png").stat().st_size > 20_000
    cached = sorted((tmp_path / "cache" / "catalogs").glob("*.h5"))
    assert len(cached) == 1 and prepared.prepare(cfg, pointings.make_plan(cfg)).reused
