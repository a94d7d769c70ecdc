"""Copy-on-write copies of cached reference models (stages/shared_arrays.py), on a real jwst DarkModel.

Fast: a dark read back from FITS (big-endian arrays, as jwst gets them) is shared; every private copy
shows the same values, dtypes and shapes, may be written like the model jwst opens itself, and keeps its
writes to itself: the cache's model and the other copies never see them, and the cache's model refuses
writes. The memory files go when the model does.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from stdatamodels.jwst import datamodels

from dream_hpc.stages import shared_arrays


@pytest.fixture()
def dark(tmp_path):
    rng = np.random.default_rng(1)
    data = rng.normal(0, 1, (6, 256, 256)).astype(np.float32)  # 1.5 MiB: shared
    data[0, 0, :3] = np.nan
    model = datamodels.DarkModel(data=data, err=np.ones_like(data), dq=np.zeros((256, 256), np.uint32))
    model.meta.exposure.nframes = 1
    model.save(tmp_path / "dark.fits")
    with datamodels.DarkModel(tmp_path / "dark.fits") as m:
        yield m


def test_private_copies_see_the_same_values_and_keep_their_writes(dark) -> None:
    loaded = {k: dark._instance[k].copy() for k in ("data", "err", "dq")}
    assert loaded["data"].dtype.byteorder == ">"  # as read from FITS
    shared_arrays.share(dark)
    assert all(shared_arrays.is_shared(dark._instance[k]) for k in ("data", "err"))  # dq: 256 KiB, copied
    with pytest.raises(ValueError, match="read-only"):
        dark.data[0, 0, 0] = 1.0
    a, b = shared_arrays.private_copy(dark), shared_arrays.private_copy(dark)
    for k, want in loaded.items():
        got = a._instance[k]
        assert got.dtype == want.dtype and got.shape == want.shape
        assert got.tobytes() == want.tobytes()
    # what jwst does to its references: dark_sub zeroes NaNs, ramp_fit scales in place
    step = datamodels.DarkModel(a)  # the step opens the override the way it opens a file name
    step.data[np.isnan(step.data)] = 0.0
    step.err *= 2.0
    step.dq[0, 0] = 1
    assert np.isnan(dark.data[0, 0, :3]).all() and np.isnan(b.data[0, 0, :3]).all()
    assert (dark.err == 1.0).all() and (b.err == 1.0).all() and dark.dq[0, 0] == 0 and b.dq[0, 0] == 0
    assert a.meta is not dark.meta and a.meta.exposure.nframes == 1


def test_memory_files_go_with_the_model(dark) -> None:
    before = len(shared_arrays._FILES)
    shared_arrays.share(dark)
    copy = shared_arrays.private_copy(dark)
    assert len(shared_arrays._FILES) == before + 2
    shared_arrays.share(dark)  # idempotent: nothing shared twice
    assert len(shared_arrays._FILES) == before + 2
    del copy
    dark._instance.clear()
    gc.collect()
    assert len(shared_arrays._FILES) == before
