"""Which tiles a per-tile science check could not judge, and why (drivers/tiled_science.py; fast, no jwst)."""

from __future__ import annotations

from pathlib import Path

from dream_hpc.core.runstate import MosaicState, RunView
from dream_hpc.drivers import tiled_science


def test_missing_tiles_are_named_with_their_tasks_error() -> None:
    view = RunView(root=Path("."))
    view.mosaic_tasks["F150W/tile/r0c1"] = MosaicState("F150W/tile/r0c1", status="failed",
                                                       error="blocked: unit jw..._nrcb1 failed")
    index = {"missing_tiles": ["r0c1", "r1c1"]}
    why = tiled_science.not_made(view, "F150W", index)
    assert why == {"r0c1": "tile task failed: blocked: unit jw..._nrcb1 failed", "r1c1": "tile task never ran"}


def test_judged_per_tile_only_when_tiled_and_unassembled_or_asked() -> None:
    assert tiled_science.per_tile({"phase": "merge", "i2d": None}, forced=False)
    assert not tiled_science.per_tile({"phase": "merge", "i2d": "mosaic/x_i2d.fits"}, forced=False)
    assert tiled_science.per_tile({"phase": "merge", "i2d": "mosaic/x_i2d.fits"}, forced=True)
    assert not tiled_science.per_tile({"i2d": "mosaic/x_i2d.fits"}, forced=True)  # a single Image3


def test_the_summary_line_names_tiles_not_judged() -> None:
    sc = {"tiles": {"judged": ["r0c0"], "n_planned": 2, "not_judged": {"r0c1": "tile task never ran"},
                    "checks_not_made": {"sky_matching": "needs the assembled mosaic"}}}
    lines = tiled_science.line(sc)
    assert "judged per tile: 1/2 tiles; NOT judged: r0c1 (tile task never ran)" in lines[0]
    assert lines[1].strip() == "sky_matching not checked: needs the assembled mosaic"
    assert tiled_science.line({}) == []
