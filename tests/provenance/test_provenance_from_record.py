"""`compare` from the record alone (the first run's files not here), science digests, and what
`reproduce` says it remapped. Runs with real FITS products written by _provenance_fixtures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np
from _provenance_fixtures import UNITS, consolidated_run, write_fits

from dream_hpc.cli import main
from dream_hpc.provenance.compare import EXIT_INCOMPLETE
from dream_hpc.provenance.digest import science_digest

CAL = f"exposures/{UNITS[0]}_cal.fits"


def _alone(run, where: Path) -> Path:
    """The run's provenance.h5 copied alone to another directory (the record, not the products)."""
    where.mkdir(parents=True)
    return Path(shutil.copy2(run.provenance, where / "A.h5"))


def _compare(a: Path, b: Path, capsys, *extra: str) -> tuple[int, str]:
    rc = main(["compare", str(a), str(b), *extra])
    out = capsys.readouterr()
    return rc, out.out + out.err


def test_record_alone_reproduced_by_recorded_digests(tmp_path: Path, capsys) -> None:
    record = _alone(consolidated_run(tmp_path, "a", date="2025-01-01T00:00:00"), tmp_path / "elsewhere")
    run_b = consolidated_run(tmp_path, "b", ranks=2, date="2026-06-06T12:00:00")  # other DATE: every file checksum differs
    rc, out = _compare(record, run_b.root, capsys, "--json", str(tmp_path / "cmp.json"))
    assert rc == 0, out
    assert "10 compared: 10 identical (10 by recorded checksums)" in out
    assert "none of A's product files is here" in out
    assert "verdict     REPRODUCED: every science array bit-identical by recorded checksums" in out
    result = json.loads((tmp_path / "cmp.json").read_text())
    assert result["verdict"] == "REPRODUCED" and result["exit_code"] == 0
    assert {p["by"] for p in result["products"]} == {"record"}


def test_record_alone_names_the_product_that_differs(tmp_path: Path, capsys) -> None:
    record = _alone(consolidated_run(tmp_path, "a"), tmp_path / "elsewhere")
    run_b = consolidated_run(tmp_path, "b", pixel_offset=0.25)
    rc, out = _compare(record, run_b.root, capsys)
    assert rc == 1, out
    assert "9 identical, 1 different" in out
    assert f"  different: {CAL}\n      differs from the record: science digest" in out
    assert f"A's file {tmp_path / 'elsewhere' / CAL} is not here: bring it to see which arrays differ" in out
    assert f"verdict     NOT REPRODUCED: 1 product(s) differ ({CAL})" in out


def test_record_alone_without_digests_is_incomplete_not_different(tmp_path: Path, capsys) -> None:
    """A record made before science digests: checksums that differ prove nothing (headers), so it says so."""
    record = _alone(consolidated_run(tmp_path, "a"), tmp_path / "elsewhere")
    with h5py.File(record, "a") as h5:
        names: list[str] = []
        h5.visit(lambda n: names.append(n) if n.endswith("/science_sha256") else None)
        for name in names:
            del h5[name]
    run_b = consolidated_run(tmp_path, "b", date="2026-06-06T12:00:00")
    rc, out = _compare(record, run_b.root, capsys)
    assert rc == EXIT_INCOMPLETE == 3, out
    assert "10 compared: 10 unchecked" in out and "record has no science digest" in out
    assert "verdict     INCOMPLETE: 10 of 10 product(s) could not be checked" in out
    assert "NOT REPRODUCED" not in out and "different" not in out


def test_a_product_b_did_not_make_is_a_difference(tmp_path: Path, capsys) -> None:
    record = _alone(consolidated_run(tmp_path, "a"), tmp_path / "elsewhere")
    run_b = consolidated_run(tmp_path, "b", fail_unit=UNITS[2])  # its detector1 fails: no rate, cal; no mosaic input
    rc, out = _compare(record, run_b.root, capsys)
    assert rc == 1, out
    assert f"  missing: exposures/{UNITS[2]}_cal.fits\n      recorded by A only" in out
    verdict = next(line for line in out.splitlines() if line.startswith("verdict"))
    assert "NOT REPRODUCED: " in verdict and "unit outcomes differ" in verdict
    assert "2 product(s) of A not produced by B" in verdict and "unchecked" not in out


def test_both_records_alone_compare_their_digests(tmp_path: Path, capsys) -> None:
    record_a = _alone(consolidated_run(tmp_path, "a"), tmp_path / "here-a")
    record_b = _alone(consolidated_run(tmp_path, "b", date="2026-06-06T12:00:00"), tmp_path / "here-b")
    rc, out = _compare(record_a, record_b, capsys)
    assert rc == 0, out
    assert "science digest of B's record equals A's record's" not in out  # identical products are not listed
    assert "REPRODUCED: every science array bit-identical by recorded checksums" in out


def test_a_b_file_edited_after_its_run_is_checked_as_it_is(tmp_path: Path, capsys) -> None:
    """B's record still holds the right digest; B's file is what is checked, and the edit is noted."""
    record = _alone(consolidated_run(tmp_path, "a"), tmp_path / "elsewhere")
    run_b = consolidated_run(tmp_path, "b")
    from astropy.io import fits

    with fits.open(run_b.root / CAL, memmap=False) as f:
        arrays = {h.name: h.data.copy() for h in f[1:]}
    arrays["SCI"][0, 0] *= 4
    write_fits(run_b.root / CAL, arrays, "2025-01-01T00:00:00")
    rc, out = _compare(record, run_b.root, capsys)
    assert rc == 1, out
    assert f"different: {CAL}" in out and "B's file is not the one its own record names" in out


def test_science_digest_ignores_headers_and_sees_one_pixel(tmp_path: Path) -> None:
    sci = np.linspace(-1, 1, 64, dtype=np.float32).reshape(8, 8)
    sci[0, 0], sci[4, 4] = np.nan, 0.0
    dq = np.zeros((8, 8), np.uint32)
    a = science_digest_of(tmp_path / "a_cal.fits", {"SCI": sci, "DQ": dq}, "2025-01-01")
    nan2 = sci.copy()
    nan2.view(np.uint32)[0, 0] = 0x7FC00001  # another NaN payload: equal, as compare_arrays says
    nan2[4, 4] = -0.0  # equal to 0.0, as compare_arrays says
    assert science_digest_of(tmp_path / "b_cal.fits", {"SCI": nan2, "DQ": dq}, "2026-02-02") == a
    changed = sci.copy()
    changed[3, 3] = np.nextafter(changed[3, 3], np.float32(2))  # one ulp: not bitwise the same
    assert science_digest_of(tmp_path / "c_cal.fits", {"SCI": changed, "DQ": dq}, "2025-01-01") != a
    dq1 = dq.copy()
    dq1[1, 1] = 4
    assert science_digest_of(tmp_path / "d_cal.fits", {"SCI": sci, "DQ": dq1}, "2025-01-01") != a
    extra = {"SCI": sci, "DQ": dq, "WHT": np.ones((8, 8), np.float32)}  # WHT is not a cal science array
    assert science_digest_of(tmp_path / "e_cal.fits", extra, "2025-01-01") == a


def science_digest_of(path: Path, arrays: dict[str, np.ndarray], date: str) -> str:
    write_fits(path, arrays, date)
    return science_digest(path)


def test_science_digest_of_tables_and_associations(tmp_path: Path) -> None:
    from astropy.table import Table

    t = Table({"id": [1, 2], "flux": [1.5, np.nan], "label": ["a", "b"]})
    t.meta["date"] = "2025-01-01"
    t.write(tmp_path / "x_cat.ecsv", format="ascii.ecsv")
    t.meta["date"] = "2026-01-01"
    t.write(tmp_path / "y_cat.ecsv", format="ascii.ecsv")
    assert science_digest(tmp_path / "x_cat.ecsv") == science_digest(tmp_path / "y_cat.ecsv")
    t["flux"][0] = 1.6
    t.write(tmp_path / "z_cat.ecsv", format="ascii.ecsv")
    assert science_digest(tmp_path / "z_cat.ecsv") != science_digest(tmp_path / "x_cat.ecsv")
    (tmp_path / "a_asn.json").write_text(json.dumps({"asn_id": "o1", "products": [1], "code_version": "1"}))
    (tmp_path / "b_asn.json").write_text(json.dumps({"code_version": "2", "products": [1], "asn_id": "o2"}))
    assert science_digest(tmp_path / "a_asn.json") == science_digest(tmp_path / "b_asn.json")


def test_reproduce_prints_and_records_what_it_remapped(tmp_path: Path, capsys) -> None:
    from dream_hpc.drivers.reproduce import prepare_reproduction as prepare

    run_a = consolidated_run(tmp_path, "a")
    shutil.copytree(tmp_path / "refkit", tmp_path / "cluster2/kit")  # the kit carried to another path
    args = type("Args", (), dict(record=str(run_a.root), out=str(tmp_path / "r2"), allow_drift=False, base=None,
                                 crds_path=str(tmp_path / "cluster2/kit/crds_cache"), mirage_data=None,
                                 catalog=None, check_only=False))()
    _, lines = prepare(args)
    out = capsys.readouterr().out
    assert lines == []  # same contents at another path: no drift
    want = (f"reproduce: remapped references.crds_path: {(tmp_path / 'refkit/crds_cache').resolve()} -> "
            f"{(tmp_path / 'cluster2/kit/crds_cache').resolve()} (--crds-path {tmp_path / 'cluster2/kit/crds_cache'}; "
            "the recorded path exists here too)")
    assert want in out.splitlines(), out
    assert "remapped references.mirage_data" not in out and "remapped catalog.path" not in out
    facts = json.loads((tmp_path / "r2/reproduce.json").read_text())
    assert facts["remapped"] == [want.removeprefix("reproduce: remapped ")]
    assert facts["base_why"] == "the recorded config's directory"
