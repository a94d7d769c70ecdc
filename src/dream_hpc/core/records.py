"""What a journal record says, defined once: the record kinds and the fields a stage reports.

A stage returns a `StageResult`; the executor journals it as a `stage_done` record (plus the
measurements below); the read model (core/runmodel.py), the status view (core/runstate.py) and the
provenance tree (provenance/write.py) read exactly these fields back. Add a field here and every
reader carries it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any

# Every record kind the engine writes (core/journal.py documents their data).
KINDS = ("run_start", "unit_start", "step", "stage_done", "unit_done", "unit_failed", "unit_timeout",
         "mosaic_start", "mosaic_done", "mosaic_failed", "run_end")


@dataclass
class StageResult:
    stage: str
    inputs: dict[str, str] = field(default_factory=dict)  # path relative to RUN -> sha256
    outputs: dict[str, str] = field(default_factory=dict)  # path relative to RUN -> sha256
    # path -> sha256 of the product's science content only (provenance/digest.py): headers carry the
    # date of every run, so this, not the file's sha256, shows a rerun elsewhere reproduced it.
    science_sha256: dict[str, str] = field(default_factory=dict)
    refs: dict[str, str] = field(default_factory=dict)  # reftype -> reference file name (crds://...)
    ref_sha256: dict[str, str] = field(default_factory=dict)  # reference file name -> sha256
    params: dict[str, Any] = field(default_factory=dict)  # final parameters actually applied
    seeds: dict[str, int] = field(default_factory=dict)
    step_times: dict[str, float] = field(default_factory=dict)  # step name -> wall seconds
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific facts (e.g. n_sources)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The fields of a StageResult a stage_done / mosaic_done record carries (besides its stage name).
RESULT_FIELDS = tuple(f.name for f in fields(StageResult) if f.name != "stage")
# What the executor measures around each stage and adds to its record.
MEASURED_FIELDS = ("wall_s", "cpu_s", "peak_rss_mb", "start")
