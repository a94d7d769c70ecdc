"""The image built for real without Apptainer, and a survey run inside it with no network.

containers/build-rootfs.sh (`make container-rootfs`) debootstraps a Debian 12 minbase, runs the
definition's %files and %post (containers/recipe.sh, the steps `apptainer build` runs) with
chroot, packs it as SquashFS and runs %test inside it. Here:

- the image identity (containers/image_identity.py) and the build's cache key change with the lock;
- the built image holds exactly the lock (`dream-hpc versions --check` inside), its identity
  matches its files, and inside it there is no network interface but loopback;
- a 4-unit survey (2 dithers x NRCB1 F150W + NRCB5 F277W) run inside the packed image, offline,
  with the run directory bound in from outside, and the same survey run from the venv outside:
  `dream-hpc compare` says REPRODUCED with every science array bit-identical (software differs:
  one is the image, one the venv), and the inside run's provenance records the image: its
  sha256 (as the builder recorded it) and the identity the recipe wrote into it.

The build is reused from build/container while nothing it is built from changes (its key). A fresh
one took 5 min on a quiet 2-core machine, and the two surveys 80 s side by side (docs/cluster.md).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _chain_fixtures import demo_like, write_config
from _engine_fixtures import engine_env

from dream_hpc.core import versions
from dream_hpc.provenance import read as prov_read

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS = ROOT / "containers"
OUT = ROOT / "build" / "container"
IMAGE_TOP = "/opt/dream-hpc"


def identity_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("image_identity", CONTAINERS / "image_identity.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --- identity and cache key, without a build ------------------------------------------------------
def _fake_top(top: Path) -> None:
    """What the recipe finds under /opt/dream-hpc, in small."""
    (top / "source" / "src").mkdir(parents=True)
    (top / "source" / "src" / "m.py").write_text("x = 1\n")
    (top / "config").mkdir()
    (top / "config" / "demo.yaml").write_text("survey: {}\n")
    (top / "refkit").mkdir()
    (top / "refkit" / "CONTEXT").write_text("jwst_0001.pmap\n")
    (top / "refkit" / "manifest.json").write_text('{"files": {}}')
    (top / "meta").mkdir()
    (top / "meta" / "git_commit").write_text("abc")
    shutil.copy(ROOT / "requirements.lock", top / "requirements.lock")
    shutil.copy(CONTAINERS / "recipe.sh", top / "recipe.sh")
    shutil.copy(CONTAINERS / "dream-hpc.def", top / "dream-hpc.def")


def test_image_identity_changes_with_the_lock_and_the_builder(tmp_path: Path) -> None:
    ident = identity_module()
    _fake_top(tmp_path)
    first = ident.identity(tmp_path, "debootstrap", "debian:bookworm")
    assert ident.identity(tmp_path, "debootstrap", "debian:bookworm") == first  # deterministic
    assert first["lock_sha256"] == hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()
    assert ident.identity(tmp_path, "apptainer", "debian:bookworm")["image_id"] != first["image_id"]
    lock = tmp_path / "requirements.lock"
    lock.write_text(lock.read_text().replace("jwst==", "jwst==9", 1))
    changed = ident.identity(tmp_path, "debootstrap", "debian:bookworm")
    assert changed["lock_sha256"] != first["lock_sha256"] and changed["image_id"] != first["image_id"]
    # `check` notices an image whose files no longer match what was recorded at build time.
    assert ident.main(["write", "--top", str(tmp_path), "--builder", "debootstrap", "--base", "b"]) == 0
    assert ident.main(["check", "--top", str(tmp_path)]) == 0
    (tmp_path / "source" / "src" / "m.py").write_text("x = 2\n")
    assert ident.main(["check", "--top", str(tmp_path)]) == 1


def test_build_key_changes_with_the_lock(tmp_path: Path) -> None:
    """The reuse key of build/container: a changed lock (or recipe) means a new build."""
    repo = tmp_path / "repo"
    for name in ("containers", "src", "config"):
        shutil.copytree(ROOT / name, repo / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("requirements.lock", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, repo / name)
    (repo / "build" / "image-refs").mkdir(parents=True)
    (repo / "build" / "image-refs" / "CONTEXT").write_text("jwst_0001.pmap\n")
    (repo / "build" / "image-refs" / "manifest.json").write_text('{"files": {}}')

    def key() -> str:
        done = subprocess.run([str(repo / "containers" / "build-rootfs.sh"), "--key"], capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    first = key()
    assert len(first) == 64 and key() == first
    lock = repo / "requirements.lock"
    lock.write_text(lock.read_text().replace("jwst==", "jwst==9", 1))
    second = key()
    assert second != first
    (repo / "containers" / "recipe.sh").write_text((repo / "containers" / "recipe.sh").read_text() + "\n# edit\n")
    assert key() not in (first, second)


# --- the build ---------------------------------------------------------------------------------
@dataclass
class Built:
    image: Path
    sha256: str
    identity: dict[str, Any]
    build: dict[str, Any]
    fixture_s: float


def inside(built: Built, *cmd: str, binds: tuple[Path, ...] = (), timeout: float = 600,
           pwd: Path | None = None) -> subprocess.CompletedProcess:
    """`cmd` inside the packed image, offline (containers/image-chroot.sh run)."""
    args = [str(CONTAINERS / "image-chroot.sh"), "run", str(built.image)]
    for b in binds:
        args += ["--bind", str(b)]
    if pwd:
        args += ["--pwd", str(pwd)]
    return subprocess.run([*args, "--", *cmd], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def built(sysdeps: dict[str, bool], refkit_dir: Path) -> Built:
    if os.geteuid() != 0:
        pytest.skip("not root: debootstrap, chroot and mount namespaces need root (make container-rootfs)")
    missing = [t for t in ("debootstrap", "mksquashfs", "unshare") if not sysdeps.get(t)]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed and cannot be: run scripts/install-sysdeps.sh as root")
    t0 = time.monotonic()
    env = {**os.environ, "KIT": str(refkit_dir), "DREAM_PYTHON": sys.executable}
    stage = subprocess.run([str(ROOT / "scripts" / "make-crds-cache.sh"), str(ROOT / "config" / "demo.yaml"),
                            str(ROOT / "build" / "image-refs")], env=env, capture_output=True, text=True, timeout=600)
    assert stage.returncode == 0, stage.stdout + stage.stderr
    meta = subprocess.run(["make", "-s", "image-meta"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert meta.returncode == 0, meta.stderr
    done = subprocess.run([str(CONTAINERS / "build-rootfs.sh"), str(OUT)], env=env, capture_output=True,
                          text=True, timeout=3000)
    assert done.returncode == 0, f"build-rootfs failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}"
    image = OUT / "dream-hpc.sqfs"
    return Built(image=image, sha256=(OUT / "dream-hpc.sqfs.sha256").read_text().split()[0],
                 identity=json.loads((OUT / "image.json").read_text()),
                 build=json.loads((OUT / "build.json").read_text()), fixture_s=time.monotonic() - t0)


@pytest.mark.container
def test_image_is_the_lock_on_debian_12_and_offline(built: Built) -> None:
    assert hashlib.sha256(built.image.read_bytes()).hexdigest() == built.sha256 == built.build["sha256"]
    ident = built.identity
    assert ident["builder"] == "debootstrap" and "bookworm" in ident["base"]
    assert ident["os"].startswith("Debian GNU/Linux 12") and ident["python"].startswith("3.11.")
    assert ident["lock_sha256"] == hashlib.sha256((ROOT / "requirements.lock").read_bytes()).hexdigest()
    check = inside(built, "dream-hpc", "versions", "--check")
    assert check.returncode == 0, check.stdout + check.stderr
    assert "locked packages match" in check.stdout
    recheck = inside(built, "python3.11", f"{IMAGE_TOP}/image_identity.py", "check")
    assert recheck.returncode == 0, recheck.stderr
    # Apptainer's places: labels (with the recipe's commit and identity), the environment, %test.
    labels = inside(built, "cat", "/.singularity.d/labels.json")
    assert labels.returncode == 0, labels.stderr
    data = json.loads(labels.stdout)
    assert data["dream-hpc.image.image_id"] == ident["image_id"] and data["dream-hpc.git_commit"]
    assert data["dream-hpc.jwst"] == versions.read_lock(ROOT / "requirements.lock")["jwst"]
    # No network: the namespace has loopback and nothing else (no route off this machine exists).
    net = inside(built, "cat", "/proc/net/dev")
    names = {line.split(":")[0].strip() for line in net.stdout.splitlines()[2:]}
    assert net.returncode == 0 and names == {"lo"}, net.stdout


@pytest.mark.container
def test_a_tree_with_a_mount_left_in_it_is_never_deleted(built: Built, tmp_path: Path) -> None:
    """A build killed outright leaves rootfs.tmp-*; the next build removes it, but not while
    something is mounted under it (rm -rf would follow a bind mount into host files)."""
    out = tmp_path / "out"
    stale = out / "rootfs.tmp-killed"
    (stale / "mnt").mkdir(parents=True)
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "keep").write_text("host data")
    subprocess.run(["mount", "--bind", str(precious), str(stale / "mnt")], check=True)
    try:
        done = subprocess.run([str(CONTAINERS / "build-rootfs.sh"), str(out)], capture_output=True, text=True,
                              timeout=300, env={**os.environ, "DREAM_PYTHON": sys.executable})
    finally:
        subprocess.run(["umount", str(stale / "mnt")], check=True)
    assert done.returncode != 0 and "still mounted under it" in done.stderr, done.stdout + done.stderr
    assert (precious / "keep").read_text() == "host data" and (stale / "mnt").is_dir()


@pytest.mark.container
def test_survey_inside_the_image_reproduces_the_venv(built: Built, refkit_dir: Path,
                                                     tmp_path_factory: pytest.TempPathFactory) -> None:
    d = tmp_path_factory.mktemp("image-survey")
    small = dict(pointings={"rows": 1, "cols": 1, "dither": {"points": 2, "step_arcsec": 1.0, "pattern": "line"}},
                 instrument={"readout": {"readpatt": "BRIGHT2", "ngroups": 4, "nints": 1}},
                 engine={"unit_timeout_s": 300.0, "progress_interval_s": 10.0})
    outside_cfg = write_config(d / "venv", demo_like(refkit_dir, d / "catalog.ecsv", **small))
    image_kit = Path(f"{IMAGE_TOP}/refkit")  # the references the image carries, not the host's kit
    inside_cfg = write_config(d / "image", demo_like(image_kit, d / "catalog.ecsv", **small), synth=False)

    t0 = time.monotonic()
    env = engine_env(DREAM_HPC_CACHE_DIR=str(d / "digests"), DREAM_HPC_GIT_COMMIT="outside")
    venv = subprocess.Popen([sys.executable, "-m", "dream_hpc", "survey", str(outside_cfg), "--out", str(d / "A")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    try:
        image = inside(built, "dream-hpc", "survey", str(inside_cfg), "--out", str(d / "B"), binds=(d,), pwd=d,
                       timeout=1500)
        venv_out, _ = venv.communicate(timeout=1500)
    finally:
        if venv.poll() is None:
            venv.kill()
            venv.wait()
    surveys_s = time.monotonic() - t0
    assert venv.returncode == 0, venv_out[-4000:]
    assert image.returncode == 0, image.stdout[-4000:] + image.stderr[-4000:]

    cmp_json = d / "compare.json"
    cmp = subprocess.run([sys.executable, "-m", "dream_hpc", "compare", str(d / "A"), str(d / "B"),
                          "--json", str(cmp_json)], capture_output=True, text=True, timeout=600, env=env, cwd=ROOT)
    assert cmp.returncode == 0, cmp.stdout + cmp.stderr
    assert "verdict     REPRODUCED: every science array bit-identical" in cmp.stdout, cmp.stdout
    result = json.loads(cmp_json.read_text())
    verdicts = {p["verdict"] for p in result["products"]}
    assert result["reproduced"] and verdicts == {"identical"}, cmp.stdout
    kinds = {Path(p["path"]).name.split("_")[-1] for p in result["products"]}
    assert {"uncal.fits", "rate.fits", "cal.fits", "i2d.fits"} <= kinds, kinds

    # The inside run names its image: the file's sha256 and the identity the recipe wrote.
    run_b, run_a = prov_read.load(d / "B")["run"], prov_read.load(d / "A")["run"]
    assert run_b["container_runtime"] == "chroot" and run_b["container_path"] == str(built.image)
    assert run_b["container_sha256"] == built.sha256
    assert run_b["container_image_id"] == built.identity["image_id"]
    assert run_b["container_builder"] == "debootstrap" and "bookworm" in run_b["container_base"]
    assert run_b["container_lock_sha256"] == built.identity["lock_sha256"]
    assert not run_a.get("container_path")
    timing = {"build_fixture_s": round(built.fixture_s, 1), "build": built.build["seconds"],
              "image_bytes": built.build["image_bytes"], "surveys_side_by_side_s": round(surveys_s, 1)}
    (OUT / "last-test.json").write_text(json.dumps(timing, indent=1) + "\n")
    print(f"\ncontainer test: {json.dumps(timing)}")
