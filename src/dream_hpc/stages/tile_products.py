"""Small helpers the tiled mosaic's tasks share (stages/tiles.py, stages/tile_merge.py): a task's
StageResult with checksums, atomic datamodel saves, and one line naming inputs that are missing."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dream_hpc.core.digests import sha256_file
from dream_hpc.core.rundir import RunDir
from dream_hpc.stages.contract import StageResult
from dream_hpc.stages.image3 import MosaicError

STAGE = "image3"


def missing(paths: Sequence[Path], what: str) -> None:
    absent = [p.name for p in paths if not p.is_file()]
    if absent:
        raise MosaicError(f"{len(absent)} {what} missing, e.g. {absent[0]} (the task that makes it did not finish)")


def result(run: RunDir, inputs: Sequence[Path], outputs: Sequence[Path], params: dict[str, Any],
            times: dict[str, float], extra: dict[str, Any], refs: tuple[dict, dict] = ({}, {})) -> StageResult:
    result = StageResult(stage=STAGE, refs=refs[0], ref_sha256=refs[1], params=params, step_times=times, extra=extra)
    for p in inputs:
        result.inputs[run.rel(p)] = sha256_file(p)
    for p in outputs:
        result.outputs[run.rel(p)] = sha256_file(p)
    return result


def save_model(model: Any, path: Path) -> None:
    """Save a datamodel atomically under its final name (stdatamodels writes the name into FILENAME
    and picks the format from the suffix), in a scratch directory beside it, then rename."""
    import shutil
    import tempfile

    scratch = Path(tempfile.mkdtemp(prefix=f".tmp-{os.getpid()}-", dir=path.parent))
    try:
        model.save(str(scratch / path.name))
        os.replace(scratch / path.name, path)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
