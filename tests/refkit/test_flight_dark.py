"""The kit's flight-format FULL dark (`refkit build --flight-dark-frames N`): what jwst makes of it.

Fast (no kit is built): jwst's dark step averages a RAPID dark to the exposure's readout with stcal's
own `average_dark_frames_3d`; for every read pattern that average must be the readout-matched dark the
default kit writes (the same expected signal), so a kit with flight darks calibrates like the default one.
Requests the flight format cannot serve fail in one line.
"""

from __future__ import annotations

import numpy as np
import pytest
from stcal.dark_current import dark_class, dark_sub

from dream_hpc import refkit
from dream_hpc.config import READ_PATTERNS
from dream_hpc.refkit.builder import FLIGHT_DARK_FRAMES, plan_kit
from dream_hpc.refkit.crds_refs import flight_dark_data
from dream_hpc.refkit.detector import DetectorModel


def _model() -> DetectorModel:
    """A detector model with just a dark-current map (all the dark frames are made from)."""
    m = object.__new__(DetectorModel)
    rng = np.random.default_rng(3)
    m.dark_rate = np.concatenate([rng.uniform(0.0, 0.01, 60), rng.uniform(0.5, 50.0, 4)]).reshape(8, 8).astype(np.float32)
    return m


@pytest.mark.parametrize("readpatt", sorted(READ_PATTERNS))
def test_averaged_to_any_readout_it_is_the_readout_matched_dark(readpatt: str) -> None:
    model, ngroups = _model(), 6
    nframes, groupgap = READ_PATTERNS[readpatt]
    needed = ngroups * (nframes + groupgap)
    dark = dark_class.DarkData(dims=(needed + 3, 8, 8))  # extra frames at the end are never read
    dark.data[...] = flight_dark_data(model, needed + 3)
    dark.exp_nframes, dark.exp_groupgap, dark.exp_ngroups = 1, 0, needed + 3
    averaged = dark_sub.average_dark_frames_3d(dark, ngroups, nframes, groupgap) if nframes > 1 or groupgap else None
    got = averaged.data if averaged is not None else dark.data[:ngroups]
    want = model.mean_dark_groups(nframes, groupgap, ngroups)
    np.testing.assert_allclose(got, want, rtol=2e-6, atol=1e-6)


def test_requests_it_cannot_serve_fail_in_one_line() -> None:
    assert plan_kit(["NRCB1"], ["F150W"], ["BRIGHT2"], 4, 1).flight_dark_frames == 0  # the default kit
    plan = plan_kit(["NRCB1"], ["F150W"], ["MEDIUM8"], 4, 1, ["FULL"], FLIGHT_DARK_FRAMES)
    assert plan.parameters()["flight_dark_frames"] == FLIGHT_DARK_FRAMES
    with pytest.raises(refkit.KitError, match="--flight-dark-frames 30: give 40 to"):  # MEDIUM8 x 4 reads 40
        plan_kit(["NRCB1"], ["F150W"], ["MEDIUM8"], 4, 1, ["FULL"], 30)
    with pytest.raises(refkit.KitError, match="add FULL to --subarrays"):
        plan_kit(["NRCB1"], ["F150W"], ["BRIGHT2"], 4, 1, ["SUB400P"], 100)
