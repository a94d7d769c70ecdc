"""containers/dream-hpc.def, checked without Apptainer: structure, lock pins, %files, offline env.

Apptainer cannot be installed on the test machines, so the definition is parsed here (a small
parser for the header and %sections) and held to what the rest of the project expects: it
installs exactly requirements.lock (hashes required), its labels are the lock's versions, every
file it copies exists or is produced by a named make target, its %environment is the offline
environment `dream_hpc.offline` sets, and its base image is pinned by digest.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dream_hpc.config import load_config
from dream_hpc.core import offline, versions

ROOT = Path(__file__).resolve().parents[2]
DEF = ROOT / "containers" / "dream-hpc.def"
LOCK = ROOT / "requirements.lock"
MAKEFILES = [ROOT / "Makefile", ROOT / "mk" / "cluster.mk"]
# Section names Apptainer knows (apps sections excluded: this image has none).
KNOWN_SECTIONS = {"setup", "files", "post", "environment", "runscript", "startscript", "test", "labels", "help",
                  "arguments"}
# %files sources that are build products, and the make target that produces each.
GENERATED = {"build/image-refs": "crds-cache", "build/image-meta": "image-meta"}
# The build steps %post runs (shared with containers/build-rootfs.sh, the builder without Apptainer).
RECIPE = ROOT / "containers" / "recipe.sh"
LABELLED_PACKAGES = ("jwst", "stcal", "mirage", "crds", "mpich", "mpi4py")


# --- a small parser for Apptainer definition files ---------------------------------------------
@dataclass
class Definition:
    header: dict[str, str] = field(default_factory=dict)
    sections: dict[str, list[str]] = field(default_factory=dict)

    def body(self, name: str) -> str:
        return "\n".join(self.sections.get(name, []))

    def entries(self, name: str) -> list[list[str]]:
        """Non-blank, non-comment lines of a data section (%files, %labels), split like a shell would."""
        return [shlex.split(ln) for ln in self.sections.get(name, []) if ln.strip() and not ln.strip().startswith("#")]


def parse_definition(text: str) -> Definition:
    """Header `Key: value` lines, then `%section` blocks (a section may appear more than once: appended)."""
    d = Definition()
    current: str | None = None
    for n, line in enumerate(text.splitlines(), 1):
        m = re.match(r"^%(\w+)(\s.*)?$", line)
        if m:
            current = m.group(1).lower()
            if current not in KNOWN_SECTIONS:
                raise ValueError(f"line {n}: unknown section %{current}")
            d.sections.setdefault(current, [])
            continue
        if current is not None:
            d.sections[current].append(line)
        elif line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition(":")
            if not sep:
                raise ValueError(f"line {n}: header line is not 'Key: value': {line!r}")
            d.header[key.strip().lower()] = value.strip()
    return d


def exports(body: str) -> dict[str, str]:
    """`export NAME=value` lines of a shell section, value unquoted (command substitutions kept as text)."""
    out = {}
    for line in body.splitlines():
        m = re.match(r"^\s*export\s+([A-Za-z_][A-Za-z0-9_]*)=(.*)$", line)
        if m:
            value = m.group(2).strip()
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            out[m.group(1)] = value
    return out


@pytest.fixture(scope="module")
def definition() -> Definition:
    return parse_definition(DEF.read_text())


def build_steps(d: Definition) -> str:
    """%post and the recipe it runs: what both builders execute."""
    return d.body("post") + "\n" + RECIPE.read_text()


def _make_targets() -> set[str]:
    targets = set()
    for mk in MAKEFILES:
        if mk.is_file():
            targets |= set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:(?!=)", mk.read_text(), flags=re.M))
    return targets


# --- the parser itself -------------------------------------------------------------------------
def test_parser_splits_header_and_sections() -> None:
    d = parse_definition("Bootstrap: docker\nFrom: x@sha256:ab\n# c\n%post\n  echo hi\n%labels\n  a 1\n%post\n  echo 2\n")
    assert d.header == {"bootstrap": "docker", "from": "x@sha256:ab"}
    assert d.body("post").split() == ["echo", "hi", "echo", "2"]
    assert d.entries("labels") == [["a", "1"]]
    with pytest.raises(ValueError, match="unknown section %pots"):
        parse_definition("Bootstrap: docker\n%pots\n")


def test_definition_has_the_sections_an_image_needs(definition: Definition) -> None:
    missing = {"files", "post", "environment", "labels", "test", "runscript"} - set(definition.sections)
    assert not missing, f"containers/dream-hpc.def lacks %{', %'.join(sorted(missing))}"
    for name in ("post", "environment", "test", "runscript"):  # shell sections must at least parse
        done = subprocess.run(["sh", "-n"], input=definition.body(name), text=True, capture_output=True)
        assert done.returncode == 0, f"%{name} is not valid sh: {done.stderr}"


# --- base image --------------------------------------------------------------------------------
def test_base_image_is_pinned_by_digest(definition: Definition) -> None:
    assert definition.header.get("bootstrap") == "docker"
    base = definition.header.get("from", "")
    assert re.fullmatch(r"[\w./-]+:[\w.-]+@sha256:[0-9a-f]{64}", base), \
        f"From: {base!r} must be pinned as name:tag@sha256:<64 hex> (a tag alone can move)"
    assert "bookworm" in base and "3.11" in base, "the venv and CI use Python 3.11 (bookworm)"
    labels = {e[0]: " ".join(e[1:]) for e in definition.entries("labels")}
    assert labels.get("org.opencontainers.image.base.name") == base, "the base label must name the pinned digest"


# --- Python environment: exactly the lock --------------------------------------------------------
def test_installs_exactly_the_lock_with_hashes(definition: Definition) -> None:
    post = build_steps(definition)
    files = {e[0]: e[1] for e in definition.entries("files")}
    lock_dest = files.get("requirements.lock")
    assert lock_dest, "%files must copy requirements.lock (the same file CI installs)"
    installs = [ln for ln in post.splitlines() if re.search(r"pip install", ln)]
    locked = [ln for ln in installs if "-r " + lock_dest in ln]
    assert locked and all("--require-hashes" in ln and "--no-deps" in ln for ln in locked), \
        "the environment must come from the lock with --require-hashes --no-deps"
    others = [ln for ln in installs if ln not in locked]
    assert others and all("--no-deps" in ln for ln in others), "dream-hpc itself must be installed with --no-deps"
    restated = re.findall(r"\b[A-Za-z0-9_.-]+(?:==|>=|~=)[0-9]", post)
    assert not restated, f"%post restates versions {restated}: install from the lock instead"
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"--require-hashes\b.*-r requirements\.lock", makefile), "CI/venv installs from the same lock"


def test_labels_are_the_lock_versions(definition: Definition) -> None:
    lock = versions.read_lock(LOCK)
    labels = {e[0]: " ".join(e[1:]) for e in definition.entries("labels")}
    for pkg in LABELLED_PACKAGES:
        assert labels.get(f"dream-hpc.{pkg}") == lock[pkg], (
            f"label dream-hpc.{pkg} is {labels.get(f'dream-hpc.{pkg}')!r} but requirements.lock pins {lock[pkg]}; "
            "update the %labels line")


def test_lock_change_is_caught(definition: Definition, tmp_path: Path) -> None:
    """The label check can fail: a lock with another jwst no longer matches the definition's label."""
    lock_text = re.sub(r"^jwst==\S+", "jwst==9.9.9", LOCK.read_text(), count=1, flags=re.M)
    (tmp_path / "requirements.lock").write_text(lock_text)
    labels = {e[0]: " ".join(e[1:]) for e in definition.entries("labels")}
    assert labels["dream-hpc.jwst"] != versions.read_lock(tmp_path / "requirements.lock")["jwst"]


# --- one recipe, two builders -----------------------------------------------------------------
def test_post_runs_the_shared_recipe(definition: Definition) -> None:
    """%post is containers/recipe.sh (copied in by %files), told the builder and base; by default the
    definition's own pinned base, so an Apptainer build records what its From: line says."""
    files = {e[0]: e[1] for e in definition.entries("files")}
    assert files.get("containers/recipe.sh") == "/opt/dream-hpc/recipe.sh"
    assert files.get("containers/image_identity.py") == "/opt/dream-hpc/image_identity.py"
    post = definition.body("post")
    assert re.search(r"^\s*sh /opt/dream-hpc/recipe\.sh\s*$", post, flags=re.M)
    defaults = dict(re.findall(r"(DREAM_IMAGE_\w+)=\$\{\1:-([^}]*)\}", post))
    assert defaults == {"DREAM_IMAGE_BUILDER": "apptainer", "DREAM_IMAGE_BASE": definition.header["from"]}
    # Both bases are Debian 12 with Python 3.11: the debootstrap builder's suite is the From: tag's.
    builder = (ROOT / "containers" / "build-rootfs.sh").read_text()
    assert "--variant=minbase" in builder and " bookworm " in builder and "bookworm" in definition.header["from"]
    assert "image_identity.py check" in definition.body("test"), "%test must check the recorded identity"
    done = subprocess.run(["sh", "-n", str(RECIPE)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_make_container_without_apptainer_says_how(tmp_path: Path) -> None:
    """Where apptainer is missing, `make container` stops at once with one line naming the way out."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "sh", "make"):
        (bin_dir / tool).symlink_to(subprocess.check_output(["which", tool], text=True).strip())
    done = subprocess.run(["make", "-s", "container"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={"PATH": str(bin_dir)})
    assert done.returncode != 0
    assert "error: apptainer is not installed" in done.stdout + done.stderr
    assert "make container-rootfs" in done.stdout + done.stderr


# --- %files: every source exists or has a make target ---------------------------------------------
def test_every_copied_file_exists_or_is_built(definition: Definition) -> None:
    targets = _make_targets()
    entries = definition.entries("files")
    assert entries
    for entry in entries:
        assert len(entry) == 2, f"%files line {entry} must be 'source destination'"
        src, dest = entry
        assert not Path(src).is_absolute() and ".." not in Path(src).parts, f"{src}: %files sources are repo-relative"
        assert dest.startswith("/opt/dream-hpc/"), f"{dest}: keep the image's files under /opt/dream-hpc"
        if src in GENERATED:
            assert GENERATED[src] in targets, f"{src} is produced by `make {GENERATED[src]}`, which does not exist"
        else:
            assert (ROOT / src).exists(), f"%files copies {src}, which is not in the repository"
    # The project can be installed from what is copied: pyproject's readme and package dir.
    copied = {e[0] for e in entries}
    assert {"pyproject.toml", "README.md", "src", "requirements.lock"} <= copied


# --- %environment: the offline environment dream_hpc.offline sets ----------------------------------
def test_environment_is_the_offline_environment(definition: Definition) -> None:
    env = exports(definition.body("environment"))
    files = {e[0]: e[1] for e in definition.entries("files")}
    refs_dest = files["build/image-refs"]
    expected = offline.crds_env(env["CRDS_PATH"], env["CRDS_CONTEXT"], readonly=True)
    for name, value in expected.items():
        assert env.get(name) == value, f"%environment {name}={env.get(name)!r}, dream_hpc.offline sets {value!r}"
    assert env["CRDS_SERVER_URL"] == offline.SERVERLESS_URL and "serverless" in env["CRDS_SERVER_URL"]
    for var in offline.THREAD_VARS:
        assert env.get(var) == "1", f"%environment must set {var}=1 (single-threaded math per rank)"
    assert env["CRDS_PATH"] == f"{refs_dest}/crds_cache", "CRDS_PATH must be the cache staged by make crds-cache"
    assert env["MIRAGE_DATA"] == f"{refs_dest}/mirage_data"
    assert env["DREAM_HPC_LOCK"] == files["requirements.lock"], "versions --check must read the image's lock"
    assert "/opt/dream-hpc/venv/bin" in env["PATH"]


def test_context_is_pinned_once(definition: Definition) -> None:
    env = exports(definition.body("environment"))
    labels = {e[0]: " ".join(e[1:]) for e in definition.entries("labels")}
    assert re.fullmatch(r"jwst_\d{4}\.pmap", env["CRDS_CONTEXT"])
    assert labels["dream-hpc.crds_context"] == env["CRDS_CONTEXT"]
    assert f'"{env["CRDS_CONTEXT"]}"' in definition.body("post"), "%post must refuse a cache staged for another context"
    assert "refkit/CONTEXT" in RECIPE.read_text() and "DREAM_IMAGE_CONTEXT" in definition.body("post")
    demo = load_config(ROOT / "config" / "demo.yaml")
    assert demo.references.context == env["CRDS_CONTEXT"], "the demo config must run in the image unchanged"


def test_test_and_runscript(definition: Definition) -> None:
    test = definition.body("test")
    assert "dream-hpc versions --check" in test
    assert re.search(r'dream-hpc cache verify\b.*"\$CRDS_PATH"', test)
    assert re.search(r'^\s*(exec\s+)?dream-hpc "\$@"\s*$', definition.body("runscript"), flags=re.M)


def test_mpi_comes_from_the_locked_wheel(definition: Definition) -> None:
    """MPICH is the mpich wheel of the lock (hybrid model): no distribution MPI is installed on top."""
    post = build_steps(definition)
    assert not re.search(r"apt-get install.*\b(mpich|openmpi|libmpich)", post)
    assert "mpich" in versions.read_lock(LOCK) and "mpi4py" in versions.read_lock(LOCK)


# --- the staging script the image copies from ----------------------------------------------------
@pytest.mark.slow
def test_make_crds_cache_stages_the_kit(refkit_dir: Path, tmp_path: Path, definition: Definition) -> None:
    out = tmp_path / "image-refs"
    env_ctx = exports(definition.body("environment"))["CRDS_CONTEXT"]
    cfg = tmp_path / "survey.yaml"
    cfg.write_text((ROOT / "config" / "demo.yaml").read_text().replace("../build/refkit", str(refkit_dir)))
    script = ROOT / "scripts" / "make-crds-cache.sh"
    env = {"KIT": str(refkit_dir), "DREAM_PYTHON": sys.executable, "PATH": "/usr/bin:/bin"}
    done = subprocess.run([str(script), str(cfg), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "CONTEXT").read_text().strip() == env_ctx
    assert (out / "crds_cache" / "mappings" / "jwst" / env_ctx).is_file()
    assert (out / "mirage_data").is_dir()
    # A config pinned to another context is refused, and the earlier staging is left alone.
    other = tmp_path / "other.yaml"
    other.write_text(cfg.read_text().replace(env_ctx, "jwst_9999.pmap"))
    done = subprocess.run([str(script), str(other), str(out)], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode != 0 and "containers/dream-hpc.def pins" in done.stderr
    assert (out / "CONTEXT").read_text().strip() == env_ctx
