"""Integrity of a CRDS cache or reference kit: mapping checksums, named files present, references intact.

CRDS never re-verifies a file already in its cache, so a truncated download stays there until the
step that reads it fails (the seed notes' 6 GB dark: "cannot reshape array", then two hours to
re-fetch it). `verify` catches that before any compute, naming each bad file and its fix.

Each reference file is checked against the strongest evidence available: the kit manifest's
sha256, else CRDS's own sha1 from a synced catalog (`config/jwst/crds_db.sqlite3`, written by
`crds sync --fetch-sqlite-db`), else its content (FITS structure and CHECKSUM/DATASUM, every byte
readable; ASDF opens with all blocks).
"""

from __future__ import annotations

import ast
import hashlib
import json
import re
import sqlite3
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from dream_hpc.references.content import ReadProgress, check_content, stream_digests

MAPPING_SUFFIXES = (".pmap", ".imap", ".rmap")
# CRDS refuses to start without these, even with CRDS_CONTEXT set (see shared notes).
SERVER_CONFIG_KEYS = ("observatory", "operational_context", "bad_files_list", "force_remote_mode", "last_synced")
_SHA1SUM_LINE = re.compile(r"""['"]sha1sum['"]\s*:\s*['"]([0-9a-fA-F]*)['"]""")
MAX_MISSING_LINES = 20  # a partial cache checked without --config can miss thousands of files


@dataclass
class Problem:
    path: str  # as shown to the user (relative to the directory verified)
    what: str
    fix: str

    def line(self) -> str:
        return f"{self.path}: {self.what}; fix: {self.fix}"


@dataclass
class Report:
    root: Path
    problems: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    n_mappings: int = 0
    n_references: int = 0
    n_other: int = 0  # kit files outside the CRDS cache (MIRAGE_DATA), checked against the manifest
    n_bytes: int = 0
    seconds: float = 0.0
    evidence: dict[str, int] = field(default_factory=dict)  # how references were checked -> count
    good: dict[Path, tuple[str, int]] = field(default_factory=dict)  # file found intact -> (sha256, size)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        how = ", ".join(f"{n} by {k}" for k, n in sorted(self.evidence.items())) or "none"
        verdict = "OK" if self.ok else f"{len(self.problems)} problem(s)"
        other = f", {self.n_other} other kit files" if self.n_other else ""
        return (f"cache verify {self.root}: {verdict}: {self.n_mappings} mappings, {self.n_references} "
                f"references ({how}){other}, {self.n_bytes / 2**20:.1f} MiB read in {self.seconds:.1f} s")


# --- where things are -------------------------------------------------------------------------
@dataclass
class Layout:
    shown: Path  # what the user named
    root: Path  # the same, resolved
    cache: Path  # CRDS cache root (config/, mappings/, references/)
    kit: Path | None  # kit root when verifying a kit (manifest.json beside crds_cache/)
    manifest: dict[str, tuple[str, int | None]] | None  # path relative to kit -> (sha256, size)

    def rel(self, path: Path) -> str:
        try:
            return str(self.shown / path.relative_to(self.root))
        except ValueError:
            return str(path)

    def reference_path(self, name: str) -> Path:
        """Where CRDS keeps reference `name` (instrument subdirectories unless the cache is flat)."""
        mode_file = self.cache / "config" / "jwst" / "ref_cache_subdir_mode"
        flat = mode_file.is_file() and mode_file.read_text().strip() == "flat"
        parts = name.split("_")
        sub = "" if flat or len(parts) < 3 else parts[1]
        return self.cache / "references" / "jwst" / sub / name

    def fix(self, name: str, what: str = "file") -> str:
        if self.kit is not None:
            return f"rebuild with `dream-hpc refkit build --out {self.kit}`"
        if what == "config":
            return f"re-sync with `crds sync --contexts {name}` on a connected node (CRDS_SERVER_URL set)"
        return (f"re-sync with `crds sync --files {name} --check-sha1sum --repair-files` on a connected "
                "node (CRDS_SERVER_URL set)")


def locate(path: str | Path) -> Layout:
    """Find the CRDS cache (and kit manifest) for a cache root, a kit root, or a kit's crds_cache."""
    shown = Path(path)
    root = shown.resolve()
    if not root.is_dir():
        raise FileNotFoundError(2, "no such directory", str(shown))
    if (root / "crds_cache").is_dir():
        kit, cache = root, root / "crds_cache"
    elif (root / "mappings").is_dir():
        cache = root
        kit = root.parent if (root.parent / "manifest.json").is_file() and root.name == "crds_cache" else None
    else:
        raise ValueError(f"{shown}: neither a CRDS cache (no mappings/) nor a reference kit (no crds_cache/); "
                         "name the cache root (CRDS_PATH) or the kit built by `dream-hpc refkit build`")
    manifest = None
    if kit is not None:
        mpath = kit / "manifest.json"
        manifest = read_manifest(mpath) if mpath.is_file() else {}
    return Layout(shown=shown, root=root, cache=cache, kit=kit, manifest=manifest)


def read_manifest(path: Path) -> dict[str, tuple[str, int | None]]:
    """Kit manifest -> {path relative to the kit: (sha256, size or None)}.

    Accepts {"files": {path: sha256 | {"sha256", "size"}}}, {"files": [{"path", "sha256", "size"}]}
    or a flat {path: sha256} mapping, so the reader does not break if the writer's layout grows.
    """
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: unreadable kit manifest ({e}); rebuild with `dream-hpc refkit build`") from None
    files = data.get("files", data) if isinstance(data, dict) else data
    out: dict[str, tuple[str, int | None]] = {}
    items = files.items() if isinstance(files, dict) else ((e.get("path"), e) for e in files or [])
    for rel, entry in items:
        if isinstance(entry, str) and re.fullmatch(r"[0-9a-f]{64}", entry):
            out[str(rel)] = (entry, None)
        elif isinstance(entry, dict) and isinstance(entry.get("sha256"), str):
            size = entry.get("size", entry.get("bytes"))
            out[str(rel)] = (entry["sha256"], int(size) if size is not None else None)
    return out


# --- mappings -----------------------------------------------------------------------------------
def mapping_checksum(text: str) -> str:
    """CRDS's rule: sha1 of the mapping text without the lines that contain 'sha1sum'."""
    body = "".join(line for line in text.splitlines(True) if "sha1sum" not in line)
    return hashlib.sha1(body.encode("utf-8")).hexdigest()


def _named_files(text: str, name: str) -> list[str]:
    """Files a mapping names (sub-mappings or references), N/A and other special values excluded."""
    from crds.core import rmap  # parses without evaluating code; rejects unknown selectors

    mapping = rmap.Mapping.from_string(text, name, ignore_checksum=True)
    sel = mapping.selector
    names = list(sel.values()) if isinstance(sel, dict) else list(sel.reference_names())
    return sorted({n for n in names if isinstance(n, str) and "." in n and n.upper() not in ("N/A", "OMIT")})


def _check_mappings(lay: Layout, rep: Report) -> dict[str, list[str]]:
    """Checksum and parse every mapping; returns {mapping name: files it names} for the good ones."""
    named: dict[str, list[str]] = {}
    for path in sorted(p for p in (lay.cache / "mappings").rglob("*") if p.suffix in MAPPING_SUFFIXES):
        rep.n_mappings += 1
        rel, fix = lay.rel(path), lay.fix(path.name)
        try:
            raw = path.read_bytes()
            rep.n_bytes += len(raw)
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as e:
            rep.problems.append(Problem(rel, f"unreadable mapping ({e})", fix))
            continue
        declared = _SHA1SUM_LINE.search(text)
        if not declared:
            rep.problems.append(Problem(rel, "mapping has no sha1sum (not a CRDS mapping, or damaged)", fix))
            continue
        if mapping_checksum(text) != declared.group(1).lower():
            rep.problems.append(Problem(rel, "mapping checksum mismatch (edited or corrupted since it was "
                                        "written; CRDS will refuse to load it)", fix))
            continue
        try:
            named[path.name] = _named_files(text, path.name)
        except Exception as e:  # CRDS raises MappingError and friends with a useful text
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            rep.problems.append(Problem(rel, f"mapping does not parse ({first})", fix))
    return named


def _mapping_closure(contexts: Iterable[str], named: dict[str, list[str]]) -> tuple[set[str], set[str]]:
    """All mappings and reference names reachable from `contexts` (through mappings that loaded)."""
    mappings: set[str] = set()
    refs: set[str] = set()
    todo = list(contexts)
    while todo:
        name = todo.pop()
        if name in mappings:
            continue
        mappings.add(name)
        for child in named.get(name, []):
            if child.endswith(MAPPING_SUFFIXES):
                todo.append(child)
            else:
                refs.add(child)
    return mappings, refs


# --- server config --------------------------------------------------------------------------------
def read_server_config(cache: Path) -> dict | None:
    path = cache / "config" / "jwst" / "server_config"
    try:
        info = ast.literal_eval(path.read_text())
    except (OSError, ValueError, SyntaxError):
        return None
    return info if isinstance(info, dict) else None


def _check_config(lay: Layout, rep: Report, context: str | None) -> None:
    info = read_server_config(lay.cache)
    rel = lay.rel(lay.cache / "config" / "jwst" / "server_config")
    ctx = context or "jwst_NNNN.pmap"
    if info is None:
        rep.problems.append(Problem(rel, "missing or unreadable (CRDS cannot start without it)",
                                    lay.fix(ctx, "config")))
        return
    missing = [k for k in SERVER_CONFIG_KEYS if k not in info]
    if missing:
        rep.problems.append(Problem(rel, f"lacks key(s) {', '.join(missing)} (CRDS cannot start without them)",
                                    lay.fix(ctx, "config")))


def read_catalog(cache: Path) -> dict[str, tuple[str, int | None]]:
    """CRDS's own catalog of sha1/size per file, if `crds sync --fetch-sqlite-db` put one in the cache."""
    db = cache / "config" / "jwst" / "crds_db.sqlite3"
    if not db.is_file():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            rows = con.execute("select name, sha1sum, size from crds_jwst_catalog").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return {}
    out = {}
    for name, sha1, size in rows:
        if sha1 and sha1 != "none":
            out[name] = (sha1, int(size) if str(size).isdigit() else None)
    return out


def _check_file(path: Path, rel: str, fix: str, rep: Report, progress: ReadProgress,
                sha256: str | None, sha1: str | None, size: int | None, deep: bool) -> str:
    """Check one file with the strongest evidence given; returns which evidence was used."""
    try:
        actual = path.stat().st_size
    except OSError as e:
        rep.problems.append(Problem(rel, f"cannot stat ({e.strerror})", fix))
        return "stat"
    evidence = "manifest sha256" if sha256 else "CRDS sha1" if sha1 else "content" if deep else "size"
    if actual == 0:
        rep.problems.append(Problem(rel, "empty file (0 bytes)", fix))
        return evidence
    if size is not None and actual != size:
        kind = "truncated" if actual < size else "grown"
        rep.problems.append(Problem(rel, f"{actual} bytes, expected {size} ({kind})", fix))
        progress.advance(actual, path.name)
        return evidence
    try:
        digests = stream_digests(path, ["sha256"] + (["sha1"] if sha1 else []), progress)
    except OSError as e:
        rep.problems.append(Problem(rel, f"unreadable ({e.strerror or e})", fix))
        return evidence
    rep.n_bytes += actual
    before = len(rep.problems)
    if sha256:
        if digests["sha256"] != sha256:
            rep.problems.append(Problem(rel, "sha256 differs from the kit manifest (altered or corrupted)", fix))
    elif sha1:
        if digests["sha1"] != sha1:
            rep.problems.append(Problem(rel, "sha1 differs from the CRDS catalog (altered or corrupted)", fix))
    elif deep:
        rep.problems.extend(Problem(rel, what, fix) for what in check_content(path))
    if len(rep.problems) == before:
        rep.good[path] = (digests["sha256"], actual)
    return evidence


# --- the whole check ------------------------------------------------------------------------------
def verify(path: str | Path, context: str | None = None, needed: set[str] | None = None,
           progress_stream: TextIO | None = sys.stderr) -> Report:
    """Check a CRDS cache or reference kit; every problem found is in the returned report.

    `context` limits the "named files exist" check to one pinned context (default: every .pmap in
    the cache); `needed` (reference names, e.g. from `cache refs`) limits it to what a survey uses,
    so a partial cache synced for that survey is not reported as incomplete.
    """
    t0 = time.monotonic()
    lay = locate(path)
    rep = Report(root=lay.shown)
    _check_config(lay, rep, context)
    named = _check_mappings(lay, rep)
    mapdir = lay.cache / "mappings"
    present_maps = {p.name for p in mapdir.rglob("*") if p.suffix in MAPPING_SUFFIXES}
    if context is not None and context not in present_maps:
        rep.problems.append(Problem(lay.rel(mapdir / "jwst" / context), "pinned context is not in the cache",
                                    lay.fix(context, "config")))
    contexts = [context] if context else sorted(n for n in present_maps if n.endswith(".pmap"))
    if not contexts:
        rep.problems.append(Problem(lay.rel(mapdir), "no .pmap context in the cache", lay.fix("jwst_NNNN.pmap", "config")))
    maps, refs = _mapping_closure(contexts, named)
    for name in sorted(maps - present_maps):
        rep.problems.append(Problem(lay.rel(mapdir / "jwst" / name), "mapping named by the context is missing",
                                    lay.fix(name)))

    refdir = lay.cache / "references"
    ref_paths = {p.name: p for p in refdir.rglob("*") if p.is_file()} if refdir.is_dir() else {}
    must_exist = refs if needed is None else set(needed)
    missing = sorted(must_exist - set(ref_paths))
    for name in missing[:MAX_MISSING_LINES]:
        rep.problems.append(Problem(lay.rel(lay.reference_path(name)),
                                    "reference named by the context is not in the cache", lay.fix(name)))
    if len(missing) > MAX_MISSING_LINES:
        hint = "" if needed is not None else " (a cache synced for one survey: pass --config to check only what it uses)"
        rep.problems.append(Problem(lay.rel(refdir), f"{len(missing) - MAX_MISSING_LINES} more named references "
                                    f"are not in the cache{hint}", lay.fix("NAME ...")))

    manifest = lay.manifest or {}
    catalog = read_catalog(lay.cache) if lay.kit is None else {}
    kit_files = {lay.kit / r: r for r in manifest} if lay.kit else {}
    # Kit files that are not references (mappings, CRDS config, MIRAGE_DATA): sha256 from the manifest.
    others = sorted(p for p in kit_files if p not in set(ref_paths.values()))
    total = sum(p.stat().st_size for p in [*ref_paths.values(), *others] if p.is_file())
    progress = ReadProgress(total, progress_stream)
    for name, p in sorted(ref_paths.items()):
        rep.n_references += 1
        sha256, msize = manifest.get(kit_files.get(p, ""), (None, None))
        sha1, csize = catalog.get(name, (None, None))
        how = _check_file(p, lay.rel(p), lay.fix(name), rep, progress, sha256, sha1, msize or csize, deep=True)
        rep.evidence[how] = rep.evidence.get(how, 0) + 1
    for p in others:
        sha256, msize = manifest[kit_files[p]]
        if not p.is_file():
            rep.problems.append(Problem(lay.rel(p), "listed in the kit manifest but missing", lay.fix(p.name)))
            continue
        if not p.is_relative_to(lay.cache):
            rep.n_other += 1
        _check_file(p, lay.rel(p), lay.fix(p.name), rep, progress, sha256, None, msize, deep=False)
    progress.close()

    if lay.kit is not None:
        if not manifest:
            rep.problems.append(Problem(lay.rel(lay.kit / "manifest.json"), "kit manifest missing or empty",
                                        lay.fix("")))
        pinned = lay.kit / "manifest.json.sha256"  # the refkit pins its manifest's own hash
        if manifest and pinned.is_file():
            recorded = (pinned.read_text().split() or [""])[0]
            if hashlib.sha256((lay.kit / "manifest.json").read_bytes()).hexdigest() != recorded:
                rep.problems.append(Problem(lay.rel(lay.kit / "manifest.json"), "differs from the sha256 in "
                                            "manifest.json.sha256 (the manifest was edited)", lay.fix("")))
        for p in sorted(set(ref_paths.values()) - set(kit_files)):
            rep.notes.append(f"{lay.rel(p)}: not in the kit manifest (added after the kit was built?)")
    elif not catalog:
        rep.notes.append("no kit manifest or CRDS catalog: references were checked by content "
                         "(`crds sync --fetch-sqlite-db` adds CRDS's sha1 for an exact check)")
    rep.seconds = time.monotonic() - t0
    return rep


def prepare_crds_env(path: str | Path) -> None:
    """Point CRDS at the cache, read-only and serverless, if it is not imported yet in this process."""
    from dream_hpc.core import offline

    if "crds" in sys.modules:
        return
    lay = locate(path)
    info = read_server_config(lay.cache) or {}
    context = str(info.get("operational_context") or "")
    if not re.fullmatch(r"jwst_\d+\.pmap", context):
        pmaps = sorted((lay.cache / "mappings").rglob("jwst_*.pmap"))
        context = pmaps[-1].name if pmaps else "jwst_0000.pmap"
    offline.configure(crds_path=lay.cache, context=context)
