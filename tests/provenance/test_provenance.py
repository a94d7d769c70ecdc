"""provenance.h5: consolidation, layout readable by plain h5py, crash safety, resume, audit and tamper evidence."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import h5py
import pytest
from _provenance_fixtures import CONFIG, UNITS, make_run, resume_run

from dream_hpc.cli import main
from dream_hpc.core import versions
from dream_hpc.core.digests import sha256_file
from dream_hpc.core.journal import JournalWriter, canonical, record_hash
from dream_hpc.provenance import read as prov_read
from dream_hpc.provenance import write
from dream_hpc.provenance.prov_json import build as prov_build
from dream_hpc.provenance.prov_json import validate as prov_validate

FAILED = UNITS[1]


@pytest.fixture(autouse=True)
def _digest_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_HPC_CACHE_DIR", str(tmp_path / "digest-cache"))


@pytest.fixture
def run(tmp_path: Path):
    run = make_run(tmp_path / "run", ranks=2, fail_unit=FAILED)
    write.consolidate(run)
    return run


def _audit_cli(path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(["audit", str(path)])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_layout_is_plain_h5py(run) -> None:
    with h5py.File(run.provenance, "r") as h5:
        r = h5["run"]
        assert r["config"].asstr()[()] == CONFIG
        assert r.attrs["config_sha256"] == hashlib.sha256(CONFIG.encode()).hexdigest()
        lock = r["lock"].asstr()[()]
        assert r.attrs["lock_sha256"] == hashlib.sha256(lock.encode()).hexdigest() and "jwst==" in lock
        packages = {n.decode(): v.decode() for n, v in r["packages"][()]}
        assert packages["jwst"] == versions.installed()["jwst"]
        assert r.attrs["mpi_size"] == 2 and r.attrs["crds_context"] == "jwst_0001.pmap"
        assert len(r.attrs["crds_manifest_sha256"]) == 64 and len(r.attrs["catalog_sha256"]) == 64
        assert list(h5["runs"]) == ["001"] and h5["runs/001"].attrs["status"] == "failed"

        det1 = h5[f"units/{UNITS[0]}/detector1"]
        assert det1.attrs["status"] == "done" and det1.attrs["wall_s"] == 1.5 and det1.attrs["rank"] == 0
        refs = {rt.decode(): (n.decode(), s.decode()) for rt, n, s in det1["refs"][()]}
        assert refs["dark"][0] == "crds://jwst_nircam_dark_0001.fits" and len(refs["dark"][1]) == 64
        assert json.loads(det1.attrs["params"])["jump"]["rejection_threshold"] == 5.0
        table = {n.decode(): v.decode() for n, v in det1["params_table"][()]}
        assert table["jump.rejection_threshold"] == "5.0"
        seeds = {p.decode(): int(s) for p, s in h5[f"units/{UNITS[0]}/simulate/seeds"][()]}
        assert seeds == {"poisson": 1000, "cosmic_ray": 2000, "numpy": 3000}
        out = {p.decode(): s.decode() for p, s in h5[f"units/{UNITS[0]}/image2/outputs"][()]}
        (rel, sha), = out.items()
        assert sha256_file(run.root / rel) == sha

        bad = h5[f"units/{FAILED}"]
        assert bad.attrs["status"] == "failed"
        assert bad["detector1"].attrs["step"] == "jump" and "too many values" in bad["detector1"].attrs["error"]
        assert h5[f"units/{UNITS[1]}"].attrs["status"] == "failed" and h5[f"units/{UNITS[2]}"].attrs["status"] == "done"
        assert h5["mosaic/F150W"].attrs["status"] == "done" and len(h5["mosaic/F150W/inputs"]) == 2

        # the raw journal is inside, so the chain can be re-verified from the HDF5 alone
        files = sorted(run.journal.glob("*.jsonl"))
        assert len(h5["journal"]) == len(files) == 2
        for f in files:
            g = h5[f"journal/{f.stem}"]
            lines = f.read_text().splitlines()
            assert list(g["records"].asstr()[()]) == lines
            assert g.attrs["head"] == json.loads(lines[-1])["hash"] and g.attrs["chain_ok"]


def test_audit_rebuilds_exactly_what_consolidation_wrote(run) -> None:
    """Audit's expectation is derived without HDF5; it must equal the file read back, value and type."""
    with h5py.File(run.provenance, "r") as h5:
        written = prov_read.flatten(h5)
    expected = write.expected_flat(write.build(prov_read.stored_files(written)))
    assert written == expected
    assert len(written) > 300


def test_audit_clean_run_reports_and_passes(run, capsys) -> None:
    rc, out, err = _audit_cli(run.root, capsys)
    assert rc == 0, err
    assert f"jwst {versions.installed()['jwst']}" in out and "jwst_0001.pmap" in out
    assert "2 done, 1 failed" in out and f"{FAILED}: detector1 in step jump" in out
    assert "8/8 match" in out and "audit: OK" in out


def test_audit_names_a_product_with_one_byte_changed(run, capsys) -> None:
    rel = f"exposures/{UNITS[0]}_cal.fits"
    data = bytearray((run.root / rel).read_bytes())
    data[-200] ^= 0x01
    (run.root / rel).write_bytes(bytes(data))
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1
    assert f"modified: {rel}" in err and "image2 of " + UNITS[0] in err
    assert err.count("modified:") == 1


def test_audit_names_a_missing_product(run, capsys) -> None:
    rel = "mosaic/jw09999-o001_t001_nircam_clear-f150w_i2d.fits"
    (run.root / rel).unlink()
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1 and f"missing: {rel} (produced by image3 of F150W" in err


def test_audit_detects_an_edited_attribute_in_the_hdf5(run, capsys) -> None:
    with h5py.File(run.provenance, "a") as h5:
        h5[f"units/{FAILED}/detector1"].attrs["status"] = "done"
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1
    assert (f"edited: provenance.h5 /units/{FAILED}/detector1 attribute status is 'done' but the journal "
            "records say 'failed'") in err


def test_audit_detects_an_edited_checksum_in_the_hdf5(run, capsys) -> None:
    """A forger who re-hashes a changed product and writes the new sum into the table is caught."""
    path = f"units/{UNITS[0]}/image2/outputs"
    with h5py.File(run.provenance, "a") as h5:
        rows = h5[path][()]
        rows[0]["sha256"] = b"0" * 64
        h5[path][...] = rows
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1 and f"edited: provenance.h5 /{path} row 0" in err


def _edit_h5_record(path: Path, index: int, rehash: bool) -> str:
    with h5py.File(path, "a") as h5:
        name = sorted(h5["journal"])[0]
        ds = h5[f"journal/{name}/records"]
        rec = json.loads(ds.asstr()[index])
        rec["host"] = "elsewhere"
        if rehash:
            rec["hash"] = record_hash(rec)
        ds[index] = canonical(rec)
    return name


def test_audit_detects_an_edited_journal_record_in_the_hdf5(run, capsys) -> None:
    name = _edit_h5_record(run.provenance, 3, rehash=False)
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1
    assert f"chain broken: provenance.h5 /journal/{name}: line 4: hash mismatch (the record was edited)" in err


def test_audit_detects_a_rehashed_journal_record_in_the_hdf5(run, capsys) -> None:
    name = _edit_h5_record(run.provenance, 3, rehash=True)
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1
    assert f"chain broken: provenance.h5 /journal/{name}: line 5: does not chain" in err
    assert f"differs: journal/{name}.jsonl line 4" in err  # and the journal on disk disagrees


def _journal_lines(run) -> tuple[Path, list[str]]:
    f = sorted(run.journal.glob("rank00000*.jsonl"))[0]
    return f, f.read_text().splitlines(keepends=True)


def test_deleted_journal_record_is_detected_before_and_after_consolidation(run, capsys) -> None:
    f, lines = _journal_lines(run)
    del lines[5]
    f.write_text("".join(lines))
    rc, _, err = _audit_cli(run.provenance, capsys)  # provenance.h5 still holds the original
    assert rc == 1
    assert f"chain broken: journal/{f.name}: line 6: sequence 6 follows 4" in err
    assert f"differs: journal/{f.name} line 6" in err
    write.consolidate(run)  # rebuilt from the damaged journal: the damage is carried along
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1 and f"chain broken: provenance.h5 /journal/{f.stem}: line 6:" in err


def test_reordered_journal_records_are_detected(run, capsys) -> None:
    f, lines = _journal_lines(run)
    lines[5], lines[6] = lines[6], lines[5]
    f.write_text("".join(lines))
    write.consolidate(run)
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1
    assert f"/journal/{f.stem}: line 6: sequence 6 follows 4" in err
    assert f"/journal/{f.stem}: line 7: sequence 5 follows 6" in err


def test_truncated_journal_after_consolidation_is_detected(run, capsys) -> None:
    f, lines = _journal_lines(run)
    f.write_text("".join(lines[:-1]))  # drop the last record: its chain alone cannot show it
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1
    assert f"differs: journal/{f.name} has {len(lines) - 1} records but provenance.h5 holds {len(lines)}" in err


def test_torn_last_line_is_tolerated(run, capsys) -> None:
    f, lines = _journal_lines(run)
    with open(f, "a") as fh:  # a rank SIGKILLed in the middle of a write
        fh.write(lines[3][: len(lines[3]) // 2])
    write.consolidate(run)
    with h5py.File(run.provenance, "r") as h5:
        g = h5[f"journal/{f.stem}"]
        assert g.attrs["torn_tail_bytes"] == len(lines[3]) // 2 and len(g["records"]) == len(lines)
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 0, err


def test_consolidation_is_atomic(run, monkeypatch) -> None:
    before = run.provenance.read_bytes()

    def boom(self, h5):
        raise RuntimeError("killed mid-write")

    monkeypatch.setattr(write.Tree, "write", boom)
    with pytest.raises(RuntimeError):
        write.consolidate(run)
    assert run.provenance.read_bytes() == before
    assert not list(run.root.glob(".tmp-*"))


def test_interrupted_then_resumed_run_keeps_every_attempt(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "run", ranks=2, interrupt=(UNITS[1], "detector1"))
    write.consolidate(run)  # consolidating a killed run works and says what is unfinished
    view = prov_read.load(run.provenance)
    assert view["units"][UNITS[1]]["stages"]["detector1"]["attrs"]["status"] == "incomplete"
    assert view["units"][UNITS[1]]["stages"]["detector1"]["attrs"]["step"] == "jump"
    assert view["run"]["status"] == "incomplete" and UNITS[2] not in view["units"]

    resume_run(run, [UNITS[1], UNITS[2]])
    write.consolidate(run)
    view = prov_read.load(run.provenance)
    assert [a["number"] for a in view["attempts"]] == [1, 2]
    assert view["attempts"][0]["status"] == "incomplete" and view["attempts"][1]["status"] == "ok"
    assert {u["attrs"]["status"] for u in view["units"].values()} == {"done"}
    det1 = view["units"][UNITS[1]]["stages"]["detector1"]["attrs"]
    assert det1["status"] == "done" and det1["attempt"] == 2
    assert view["units"][UNITS[0]]["stages"]["image2"]["attrs"]["attempt"] == 1  # not redone
    with h5py.File(run.provenance, "r") as h5:  # the interruption stays in the unit's history
        events = [(int(a), k.decode(), s.decode()) for _, a, _, _, k, s, _, _ in h5[f"units/{UNITS[1]}/events"][()]]
        assert (1, "step", "detector1") in events and (2, "stage_done", "detector1") in events
        assert {g.attrs["attempt"] for g in h5["journal"].values()} == {1, 2}
    rc, _, err = _audit_cli(run.root, capsys)
    assert rc == 0, err


def test_records_of_deleted_journal_files_are_kept(run, capsys) -> None:
    f = sorted(run.journal.glob("rank00001*.jsonl"))[0]
    f.unlink()
    write.consolidate(run)
    view = prov_read.load(run.provenance)
    assert view["units"][UNITS[1]]["attrs"]["status"] == "failed"  # rank 1 ran it
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1 and f"missing: journal/{f.name}" in err


def test_stale_record_is_reported(run, capsys) -> None:
    w = JournalWriter(run.journal, 0)
    w.write("run_end", None, status="ok", n_done=3, n_failed=0)
    w.close()
    rc, _, err = _audit_cli(run.provenance, capsys)
    assert rc == 1 and "stale: journal/" in err and "dream-hpc provenance" in err


def test_audit_of_a_run_never_consolidated_builds_the_record(tmp_path: Path, capsys) -> None:
    run = make_run(tmp_path / "run")
    assert not run.provenance.exists()
    rc, out, err = _audit_cli(run.root, capsys)
    assert rc == 0 and "built from the journal" in err and "audit: OK" in out
    assert run.provenance.is_file()


def test_audit_of_not_a_provenance_file_is_one_line(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "x.h5"
    bad.write_bytes(b"not hdf5")
    rc = main(["audit", str(bad)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "not a readable HDF5 file" in err


def test_prov_json_is_well_formed(run, tmp_path: Path, capsys) -> None:
    out = tmp_path / "prov.json"
    rc = main(["audit", str(run.root), "--prov-json", str(out)])
    assert rc == 0, capsys.readouterr().err
    doc = json.loads(out.read_text())
    assert prov_validate(doc) == []
    assert set(doc) <= {"prefix", "entity", "activity", "agent", "used", "wasGeneratedBy", "wasDerivedFrom",
                        "wasAssociatedWith"}
    view = prov_read.load(run.provenance)
    products = prov_read.products(view)
    assert {f"run:{rel}" for rel in products} <= set(doc["entity"])
    assert f"run:unit/{UNITS[0]}/detector1" in doc["activity"] and "run:mosaic/F150W" in doc["activity"]
    assert "crds:jwst_nircam_dark_0001.fits" in doc["entity"]
    assert f"sw:jwst-{versions.installed()['jwst']}" in doc["agent"]
    generated = {(g["prov:entity"], g["prov:activity"]) for g in doc["wasGeneratedBy"].values()}
    assert (f"run:exposures/{UNITS[0]}_cal.fits", f"run:unit/{UNITS[0]}/image2") in generated
    # the validator is not a rubber stamp
    broken = prov_build(view)
    broken["used"]["_:u1"]["prov:entity"] = "run:nowhere"
    broken["bogus"] = {}
    problems = prov_validate(broken)
    assert any("bogus" in p for p in problems) and any("run:nowhere" in p for p in problems)
