"""The local abs_refcat: the truth with Gaia-/HST-like errors, one realization per survey (needs the
mock catalog only: no kit, no chain)."""

from __future__ import annotations

import numpy as np
import pytest
from _chain_fixtures import DEMO, cli

from dream_hpc.config import load_config
from dream_hpc.plan.pointings import make_plan
from dream_hpc.stages import reference_catalog


@pytest.fixture(scope="module")
def cfg(tmp_path_factory):
    import yaml

    d = tmp_path_factory.mktemp("refcat")
    raw = yaml.safe_load(DEMO.read_text())
    raw["catalog"]["path"] = str(d / "catalog.ecsv")
    raw["pointings"].update(rows=1, cols=1)
    path = d / "survey.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cli(["catalog", "synth", str(path), "--out", str(d / "catalog.ecsv"), "--overwrite"], check=True)
    return load_config(path)


def test_gaia_like_catalog_is_the_truth_with_its_errors(cfg, tmp_path) -> None:
    from astropy.table import Table

    from dream_hpc.catalog import reader

    units = [u for u in make_plan(cfg) if u.filter == "F150W"]
    info = reference_catalog.write_reference_catalog(cfg, units, tmp_path / "a.ecsv")
    assert info["kind"] == "gaia" and info["n"] > 5
    t = Table.read(tmp_path / "a.ecsv")
    assert set(t["kind"]) == {"star"} and np.all(t["mag"] <= cfg.simulation.reference_catalog.mag_limit)
    src = reader.load_catalog(cfg).sources
    # every entry sits within a few sigma of a true star
    from scipy.spatial import cKDTree

    tree = cKDTree(np.column_stack([src.ra * np.cos(np.radians(src.dec)), src.dec]) * 3.6e6)
    d, _ = tree.query(np.column_stack([t["RA"] * np.cos(np.radians(t["DEC"])), t["DEC"]]) * 3.6e6)
    assert np.all(d < 6 * np.asarray(t["sigma_mas"])) and np.median(d) > 0.1  # displaced, not copied
    # one realization per survey: the LW filter's catalog gives the same star the same position
    lw = [u for u in make_plan(cfg) if u.filter == "F277W"]
    reference_catalog.write_reference_catalog(cfg, lw, tmp_path / "b.ecsv")
    b = Table.read(tmp_path / "b.ecsv")
    common = np.intersect1d(np.round(t["mag"], 6), np.round(b["mag"], 6))
    assert common.size > 0
    for m in common[:5]:
        i, j = np.flatnonzero(np.round(t["mag"], 6) == m)[0], np.flatnonzero(np.round(b["mag"], 6) == m)[0]
        assert t["RA"][i] == b["RA"][j] and t["DEC"][i] == b["DEC"][j]


def test_hst_like_catalog_adds_compact_galaxies(cfg, tmp_path) -> None:
    from astropy.table import Table

    rc = cfg.simulation.reference_catalog
    rc.kind, rc.mag_limit, rc.error_bright_mas, rc.error_faint_mas = "hst", 27.0, 5.0, 15.0
    units = [u for u in make_plan(cfg) if u.filter == "F150W"]
    reference_catalog.write_reference_catalog(cfg, units, tmp_path / "h.ecsv")
    t = Table.read(tmp_path / "h.ecsv")
    assert "galaxy" in set(t["kind"]) and t["sigma_mas"].max() <= 15.0 + 1e-9


def test_from_the_run_prepared_catalog_it_reads_only_rows_near_the_exposures(cfg, tmp_path, monkeypatch) -> None:
    """A visit's astrometry task on a survey-sized catalog: the same entries as from the whole catalog,
    without reading every prepared row (PreparedCatalog.everything)."""
    from astropy.table import Table

    from dream_hpc.catalog import prepared

    units = [u for u in make_plan(cfg) if u.filter == "F150W"]
    whole = reference_catalog.write_reference_catalog(cfg, units, tmp_path / "whole.ecsv")
    run = tmp_path / "run"
    prepared.prepare(cfg, make_plan(cfg), run / prepared.RUN_FILE)

    def every_row(self):
        raise AssertionError("read every prepared row")

    monkeypatch.setattr(prepared.PreparedCatalog, "everything", every_row)
    near = reference_catalog.write_reference_catalog(cfg, units, tmp_path / "near.ecsv", run)
    assert near == whole
    a, b = Table.read(tmp_path / "whole.ecsv"), Table.read(tmp_path / "near.ecsv")
    for col in ("RA", "DEC", "mag", "sigma_mas"):
        assert np.array_equal(a[col], b[col]), col
