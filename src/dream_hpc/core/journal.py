"""The run journal: append-only, fsynced, hash-chained JSON lines, one file per rank and attempt.

Ranks never share a file, so no locking is needed and a SIGKILL can at worst leave one partial
last line, which readers drop. Each record carries the hash of the previous one in its file
(`prev`) and its own (`hash` = sha256 of `prev` + the canonical JSON of the record without
`hash`), so editing, deleting or reordering a record breaks the chain. Provenance consolidates
the journal into HDF5; status and resume read it directly.

Record kinds (``kind``) and their ``data``:
  run_start   {config_sha256, argv, mpi_size, hosts, slurm: {...}, versions: {...}, ...}
  unit_start  {stage}                          a unit began (stage = first stage to run)
  step        {stage, step, status: start|done}  a jwst step or Mirage phase began/ended
  stage_done  {stage, inputs: {relpath: sha256}, outputs: {relpath: sha256}, refs: {type: name},
               ref_sha256: {name: sha256}, params: {...}, seeds: {...}, wall_s, cpu_s, peak_rss_mb,
               science_sha256: {relpath: science digest (prov_digest)}}
  unit_done   {outputs: {relpath: sha256}, wall_s, peak_rss_mb}
  unit_failed {stage, step, error}           an exception (traceback in the unit log)
  unit_timeout {stage, step, limit_s}        stopped after exceeding its time limit
  mosaic_done {filter, asn, inputs: {...}, outputs: {...}, science_sha256: {...}, params, refs, wall_s, ...}
  mosaic_failed {filter, error}
  run_end     {status, n_done, n_failed}
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

GENESIS = "0" * 64


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def record_hash(record: dict[str, Any]) -> str:
    body = {k: v for k, v in record.items() if k != "hash"}
    return hashlib.sha256((record.get("prev", GENESIS) + canonical(body)).encode()).hexdigest()


def now_iso() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


class JournalWriter:
    """Appends records to one journal file, fsyncing each so it survives a SIGKILL."""

    def __init__(self, directory: str | Path, rank: int = 0):
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%f")
        self.path = directory / f"rank{rank:05d}-{stamp}-{os.getpid()}.jsonl"
        self.rank = rank
        self.host = socket.gethostname()
        self.seq = 0
        self.prev = GENESIS
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def write(self, kind: str, unit: str | None = None, **data: Any) -> dict[str, Any]:
        record = {"seq": self.seq, "time": now_iso(), "rank": self.rank, "host": self.host,
                  "pid": os.getpid(), "kind": kind, "unit": unit, "data": data, "prev": self.prev}
        record["hash"] = record_hash(record)
        os.write(self._fd, (canonical(record) + "\n").encode())
        os.fsync(self._fd)
        self.seq += 1
        self.prev = record["hash"]
        return record

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


@dataclass
class ChainProblem:
    file: str
    line: int
    problem: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.problem}"


@dataclass
class JournalFile:
    """One journal file as stored: its raw lines (exactly as written) and what they parse to."""

    name: str
    lines: list[str]
    torn_tail_bytes: int = 0  # length of a final partial line dropped (a rank killed mid-write)
    records: list[dict[str, Any]] = field(default_factory=list)
    hashes: list[str] = field(default_factory=list)  # the `hash` field of each line ("" if unreadable)
    problems: list[ChainProblem] = field(default_factory=list)
    attempt: int = 0
    rank: int = -1

    @property
    def head(self) -> str:
        """Hash of the last record: the value that pins the whole chain."""
        return self.hashes[-1] if self.hashes else GENESIS


def parse_lines(name: str, lines: list[str], torn_tail_bytes: int = 0) -> JournalFile:
    """Parse and verify the chain of one journal file's lines (the one verifier of the chain)."""
    jf = JournalFile(name=name, lines=lines, torn_tail_bytes=torn_tail_bytes)
    prev, expected_seq = GENESIS, 0
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict):
                raise ValueError
        except ValueError:
            jf.problems.append(ChainProblem(name, n, "not valid JSON (edited or corrupted)"))
            jf.hashes.append("")
            prev, expected_seq = "", expected_seq + 1
            continue
        issues = []
        if record_hash(rec) != rec.get("hash"):
            issues.append("hash mismatch (the record was edited)")
        if rec.get("seq") != expected_seq:  # relative to the record before: one deletion is one message
            issues.append(f"sequence {rec.get('seq')} follows {expected_seq - 1}")
        if rec.get("prev") != prev:
            issues.append("does not chain to the record before it")
        if len(issues) > 1 or issues and not issues[0].startswith("hash"):
            issues.append("(a record was deleted, inserted, reordered or edited)" if issues[0].startswith("hash")
                          else "(a record was deleted, inserted or reordered)")
        if issues:
            jf.problems.append(ChainProblem(name, n, "; ".join(issues[:-1]) + " " + issues[-1]
                                            if len(issues) > 1 else issues[0]))
        prev = str(rec.get("hash", ""))
        expected_seq = rec["seq"] + 1 if isinstance(rec.get("seq"), int) else expected_seq + 1
        jf.hashes.append(prev)
        jf.records.append(rec)
    ranks = {r.get("rank") for r in jf.records if isinstance(r.get("rank"), int)}
    jf.rank = ranks.pop() if len(ranks) == 1 else -1
    return jf


def split_raw(raw: bytes) -> tuple[list[str], int]:
    """Lines of a journal file and the size of a torn (newline-less) last line, which is dropped."""
    parts = raw.split(b"\n")
    torn = len(parts.pop())  # "" after a final newline, else the partial write
    return [p.decode("utf-8", errors="replace") for p in parts], torn


def read_file(path: str | Path) -> JournalFile:
    """One journal file, its chain verified; a final line without a newline (a write cut short by a
    kill) is dropped, not an error."""
    path = Path(path)
    lines, torn = split_raw(path.read_bytes())
    return parse_lines(path.name, lines, torn)


def journal_files(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("rank*.jsonl"))


def read_journal(directory: str | Path) -> list[JournalFile]:
    """Every journal file of a run, each verified: the one reader of the journal."""
    return [read_file(p) for p in journal_files(directory)]


def ordered_records(files: list[JournalFile]) -> list[dict[str, Any]]:
    """All records of a run in time order (ties broken by file and sequence)."""
    stamped = [(r.get("time", ""), f.name, r.get("seq", 0), r) for f in files for r in f.records]
    return [r for *_, r in sorted(stamped, key=lambda t: t[:3])]
