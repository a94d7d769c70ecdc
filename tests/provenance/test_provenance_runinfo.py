"""runinfo.collect -> provenance.facts.collect: the run-level facts the engine journals in run_start."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from _provenance_fixtures import CONFIG, make_refkit

from dream_hpc.config import parse_config
from dream_hpc.core import digests
from dream_hpc.core.journal import JournalWriter
from dream_hpc.core.rundir import RunDir
from dream_hpc.provenance import facts


@pytest.fixture(autouse=True)
def _env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DREAM_HPC_CACHE_DIR", str(tmp_path / "digest-cache"))
    for var in ("APPTAINER_CONTAINER", "SINGULARITY_CONTAINER", "DREAM_HPC_IMAGE", "DREAM_HPC_IMAGE_RUNTIME",
                *facts.SLURM_VARS.values()):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DREAM_HPC_IMAGE_IDENTITY", str(tmp_path / "no-image.json"))


@pytest.fixture
def cfg(tmp_path: Path):
    make_refkit(tmp_path)
    (tmp_path / "config.yaml").write_text(CONFIG)
    return parse_config(CONFIG, tmp_path / "config.yaml")


def test_collect_records_config_lock_software_and_caches(cfg, tmp_path: Path) -> None:
    info = facts.collect(cfg, RunDir.create(tmp_path / "run"), mpi_size=4, hosts=["n2", "n1", "n2"])
    assert info["config_text"] == CONFIG and info["config_sha256"] == hashlib.sha256(CONFIG.encode()).hexdigest()
    assert info["lock_sha256"] == hashlib.sha256(info["lock_text"].encode()).hexdigest()
    assert "jwst" in info["packages"] and info["versions"]["jwst"] == info["packages"]["jwst"]
    assert info["mpi_size"] == 4 and info["hosts"] == ["n1", "n2"] and info["attempt"] == 1
    assert info["crds"]["context"] == "jwst_0001.pmap" and info["crds"]["n_files"] == 4
    assert info["mirage_data"]["manifest_kind"] == "listing"
    assert info["catalog"]["sha256"] == hashlib.sha256((tmp_path / "catalog.ecsv").read_bytes()).hexdigest()
    assert info["container"] == {} and info["slurm"] == {}
    json.dumps(info)  # goes into a journal record as is


def test_container_digest_is_cached(cfg, tmp_path: Path, monkeypatch) -> None:
    sif = tmp_path / "dream-hpc.sif"
    sif.write_bytes(os.urandom(4096))
    monkeypatch.setenv("APPTAINER_CONTAINER", str(sif))
    run = RunDir.create(tmp_path / "run")
    first = facts.collect(cfg, run)["container"]
    assert first == {"runtime": "apptainer", "path": str(sif), "sha256": hashlib.sha256(sif.read_bytes()).hexdigest()}

    def no_rehash(path):  # a multi-GB image must not be hashed again for the next job
        raise AssertionError(f"{path} hashed twice")

    monkeypatch.setattr(digests, "sha256_file", no_rehash)
    assert facts.collect(cfg, run)["container"] == first
    sif.write_bytes(os.urandom(4096))  # a new image at the same path is hashed again
    with pytest.raises(AssertionError, match="hashed twice"):
        facts.collect(cfg, run)


def test_image_run_by_chroot_records_file_digest_and_identity(cfg, tmp_path: Path, monkeypatch) -> None:
    """containers/image-chroot.sh names the SquashFS in DREAM_HPC_IMAGE; the recipe's image.json says what it is."""
    image = tmp_path / "dream-hpc.sqfs"
    image.write_bytes(os.urandom(4096))
    identity = {"image_id": "ab" * 32, "builder": "debootstrap", "base": "debian:bookworm", "lock_sha256": "cd" * 32,
                "built": "2026-01-01T00:00:00Z", "python": "3.11.2"}
    (tmp_path / "image.json").write_text(json.dumps(identity))
    monkeypatch.setenv("DREAM_HPC_IMAGE_IDENTITY", str(tmp_path / "image.json"))
    monkeypatch.setenv("DREAM_HPC_IMAGE", str(image))
    monkeypatch.setenv("DREAM_HPC_IMAGE_RUNTIME", "chroot")
    got = facts.collect(cfg, RunDir.create(tmp_path / "run"))["container"]
    assert got == {"runtime": "chroot", "path": str(image), "sha256": hashlib.sha256(image.read_bytes()).hexdigest(),
                   "image_id": "ab" * 32, "builder": "debootstrap", "base": "debian:bookworm", "lock_sha256": "cd" * 32}
    # Apptainer's variable wins (an Apptainer run of an image whose identity says debootstrap is still Apptainer).
    monkeypatch.setenv("APPTAINER_CONTAINER", str(image))
    assert facts.container()["runtime"] == "apptainer"
    # The identity alone (image file not visible inside) is still recorded.
    for var in ("APPTAINER_CONTAINER", "DREAM_HPC_IMAGE"):
        monkeypatch.delenv(var)
    alone = facts.container()
    assert alone["image_id"] == "ab" * 32 and alone["path"] == "" and alone["sha256"] == ""


def test_slurm_and_git_commit_from_environment(cfg, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLURM_JOB_ID", "4242")
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "3")
    monkeypatch.setenv("SLURM_JOB_NODELIST", "node[01-02]")
    monkeypatch.setenv("SLURM_JOB_PARTITION", "debug")
    monkeypatch.setenv("DREAM_HPC_GIT_COMMIT", "abc123")
    info = facts.collect(cfg, RunDir.create(tmp_path / "run"))
    assert info["slurm"] == {"job_id": "4242", "array_task_id": "3", "nodelist": "node[01-02]", "partition": "debug"}
    assert info["dream_hpc"]["git_commit"] == "abc123" and info["dream_hpc"]["git_source"] == "env"


def test_listing_manifest_ignores_mtimes_and_crds_config(tmp_path: Path) -> None:
    make_refkit(tmp_path)
    cache = tmp_path / "refkit/crds_cache"
    before = facts.cache_manifest(cache, "crds_cache")["manifest_sha256"]
    ref = next(cache.rglob("*.fits"))
    os.utime(ref, (1, 1))  # copied to another cluster: new mtimes, same files
    (cache / "config/jwst").mkdir(parents=True)
    (cache / "config/jwst/server_config").write_text("{'last_synced': 'now'}")  # changes on every sync
    assert facts.cache_manifest(cache, "crds_cache")["manifest_sha256"] == before
    ref.write_bytes(ref.read_bytes() + b"x")  # a truncated or grown reference is another cache
    assert facts.cache_manifest(cache, "crds_cache")["manifest_sha256"] != before
    assert facts.cache_manifest(tmp_path / "nowhere", "crds_cache")["manifest_kind"] == "missing"


def test_kit_manifest_is_preferred_per_cache(tmp_path: Path) -> None:
    make_refkit(tmp_path)
    kit = tmp_path / "refkit"

    def manifest(mirage_sha: str) -> None:
        files = {"crds_cache/references/a.fits": {"sha256": "11", "size": 3, "role": "dark"},
                 "mirage_data/b.fits": {"sha256": mirage_sha, "size": 4, "role": "psf"}}
        (kit / "manifest.json").write_text(json.dumps({"seed": 1, "files": files}))

    manifest("22")
    crds = facts.cache_manifest(kit / "crds_cache", "crds_cache")
    assert crds["manifest_kind"].endswith("manifest.json#crds_cache") and crds["n_files"] == 1
    manifest("33")
    assert facts.cache_manifest(kit / "crds_cache", "crds_cache") == crds  # MIRAGE_DATA's change is not CRDS's
    mirage = facts.cache_manifest(kit / "mirage_data", "mirage_data")
    assert mirage["manifest_sha256"] != crds["manifest_sha256"] and mirage["bytes"] == 4


def test_attempts_are_numbered_and_reproduction_is_recorded(cfg, tmp_path: Path) -> None:
    run = RunDir.create(tmp_path / "run")
    w = JournalWriter(run.journal, 0)
    w.write("run_start", None, **facts.collect(cfg, run))
    w.close()
    (run.root / facts.REPRODUCE_FILE).write_text(json.dumps({"source": "/x/provenance.h5", "drift": ["numpy"]}))
    info = facts.collect(cfg, run)
    assert info["attempt"] == 2 and info["reproduce"]["drift"] == ["numpy"]


def test_software_drift_names_each_package() -> None:
    lines = facts.software_drift({"jwst": "3.0.0", "gone": "1"}, {"jwst": "3.0.1", "new": "2"})
    assert lines == ["gone: recorded 1, not installed", "jwst: recorded 3.0.0, installed 3.0.1",
                     "new: not in the record, installed 2"]
