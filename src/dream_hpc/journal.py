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
from collections.abc import Iterator
from dataclasses import dataclass
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


def read_file(path: str | Path) -> tuple[list[dict[str, Any]], list[ChainProblem]]:
    """Records of one journal file, plus every chain problem found (empty list: intact).

    A final line without a newline is a write cut short by a kill: it is dropped, not an error.
    """
    path = Path(path)
    records: list[dict[str, Any]] = []
    problems: list[ChainProblem] = []
    raw = path.read_bytes()
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    elif lines:
        lines.pop()  # torn last write
    prev = GENESIS
    for n, line in enumerate(lines, 1):
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            problems.append(ChainProblem(path.name, n, "not valid JSON (edited or corrupted)"))
            continue
        if rec.get("seq") != n - 1:
            problems.append(ChainProblem(path.name, n, f"sequence {rec.get('seq')} where {n - 1} was expected "
                                         "(a record was deleted or reordered)"))
        if rec.get("prev") != prev:
            problems.append(ChainProblem(path.name, n, "does not chain to the record before it "
                                         "(a record was deleted, inserted or reordered)"))
        if record_hash(rec) != rec.get("hash"):
            problems.append(ChainProblem(path.name, n, "hash mismatch (the record was edited)"))
        prev = rec.get("hash", "")
        records.append(rec)
    return records, problems


def journal_files(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("rank*.jsonl"))


def read_all(directory: str | Path) -> Iterator[dict[str, Any]]:
    """All records of a run, ordered by time (ties broken by file and sequence)."""
    out = []
    for f in journal_files(directory):
        recs, _ = read_file(f)
        out.extend((r["time"], f.name, r["seq"], r) for r in recs)
    for *_, r in sorted(out, key=lambda t: t[:3]):
        yield r
