"""References kept hot: a worker keeps the reference models it just read for the next unit of its kind.

A rank's worker is long-lived, and a survey's units come in few kinds (detector x readout): each
Detector1 of a kind opens the very same dark, superbias, linearity, saturation, read noise, gain and
mask, and each Image2 the same flat. Reading them again is pure cost (the dark: a ~100 MB FITS per
FULL unit with the kit, GBs with flight darks); this keeps the decoded models in memory, most recently
used first, within `engine.reference_cache_gb`.

Only stpipe's supported way of handing a step its reference is used: the step parameter
`override_<reftype>`, which accepts a DataModel instance (stpipe `is_string_or_datamodel`). The file is
the one the step itself would pick: the same CRDS call on the same model (`model.get_crds_parameters()`),
made as the step starts. Two things keep products bit-identical to a cold run:
  * every step gets its own copy of the cached model: jwst writes into some reference arrays
    (stcal's ramp fit scales read noise by the gain in place; dark_sub zeroes NaNs of the dark), so a
    shared model would carry one unit's changes into the next. The copy is copy-on-write
    (stages/shared_arrays.py): its large arrays share the cache's pages until the step writes one,
    because a deep copy of a flight-size dark costs more than reading it;
  * the copy's class names the CRDS file (`override_handle`), so the product records
    `crds://<file>` in `meta.ref_file` exactly as when the step had opened the file itself.
A copy costs a few milliseconds (no FITS read, no fresh pages, no schema validation).
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

from dream_hpc.stages import shared_arrays

# reftype -> the stdatamodels class its NIRCam imaging step opens it with
HOT_REFTYPES = {
    "dark": "DarkModel",
    "superbias": "SuperBiasModel",
    "linearity": "LinearityModel",
    "saturation": "SaturationModel",
    "readnoise": "ReadnoiseModel",
    "gain": "GainModel",
    "mask": "MaskModel",
    "flat": "FlatModel",
}


def model_nbytes(model: Any) -> int:
    """Bytes of the arrays a model holds in memory (what keeping it costs)."""
    import numpy as np

    total, seen = 0, set()

    def walk(node: Any) -> None:
        nonlocal total
        if isinstance(node, np.ndarray):
            if id(node) not in seen:
                seen.add(id(node))
                total += node.nbytes
        elif isinstance(node, dict):
            for v in node.values():
                walk(v)
        elif isinstance(node, list | tuple):
            for v in node:
                walk(v)

    walk(model._instance)
    return total


class ReferenceCache:
    """Least-recently-used models within `cap_bytes`; `get` loads a missing one with `load(path)`.

    A model larger than the cap alone is loaded and returned but not kept. `size` measures a model
    (model_nbytes for DataModels; a test passes its own).
    """

    def __init__(self, cap_bytes: int, size: Callable[[Any], int] = model_nbytes):
        self.cap_bytes = max(0, int(cap_bytes))
        self._size = size
        self._items: OrderedDict[str, tuple[Any, int]] = OrderedDict()
        self.hits = self.misses = self.evictions = 0

    @property
    def nbytes(self) -> int:
        return sum(n for _, n in self._items.values())

    def __contains__(self, path: str) -> bool:
        return path in self._items

    def keys(self) -> list[str]:
        """Paths held, least recently used first."""
        return list(self._items)

    def get(self, path: str, load: Callable[[str], Any]) -> tuple[Any, bool]:
        """(model, kept): the cached model (a hit) or a fresh load, kept if it fits under the cap."""
        if path in self._items:
            self._items.move_to_end(path)
            self.hits += 1
            return self._items[path][0], True
        self.misses += 1
        model = load(path)
        n = self._size(model)
        if n > self.cap_bytes:
            return model, False
        while self._items and self.nbytes + n > self.cap_bytes:
            _, (old, _) = self._items.popitem(last=False)
            self.evictions += 1
            with contextlib.suppress(Exception):
                old.close()
        self._items[path] = (model, n)
        return model, True

    def clear(self) -> None:
        for model, _ in self._items.values():
            with contextlib.suppress(Exception):
                model.close()
        self._items.clear()


@functools.cache
def _hot_class(base_name: str, crds_name: str) -> type:
    """`base_name`'s model class whose in-memory instances identify as the CRDS file `crds_name`.

    stpipe records an in-memory override as `model.override_handle` (by default `override://<Class>`);
    this subclass records what a cold run records, `crds://<file>`.
    """
    from stdatamodels.jwst import datamodels

    base = getattr(datamodels, base_name)
    return type(f"Hot{base_name}", (base,), {"override_handle": crds_name, "__module__": __name__})


def _crds_path(model: Any, reftype: str) -> str | None:
    """The reference file the step would look up for `model` (stpipe's own CRDS call), or None."""
    from stdatamodels.jwst.datamodels import JwstDataModel
    from stpipe import crds_client

    if not isinstance(model, JwstDataModel):
        return None
    path = crds_client.get_reference_file(model.get_crds_parameters(), reftype, "jwst")
    return None if not path or path == "N/A" else str(path)


_CACHE: ReferenceCache | None = None


def cache_for(cap_gb: float) -> ReferenceCache | None:
    """This process's cache (None when the cap is 0: references are read by each step, as jwst does)."""
    global _CACHE
    cap = int(cap_gb * 2**30)
    if cap <= 0:
        return None
    if _CACHE is None:
        _CACHE = ReferenceCache(cap)
    _CACHE.cap_bytes = cap
    return _CACHE


def _serve(cache: ReferenceCache, step: Any, run: Callable[..., Any]) -> Callable[..., Any]:
    """`step.run`, with its hot reference types handed over as `override_<reftype>` copies."""
    types = [t for t in step.reference_file_types if t in HOT_REFTYPES]

    @functools.wraps(run)
    def served(*args: Any, **kwargs: Any) -> Any:
        if step.skip or not args:
            return run(*args, **kwargs)
        set_here = []
        try:
            for reftype in types:
                attr = f"override_{reftype}"
                if getattr(step, attr, None) is not None:  # someone chose a file: theirs
                    continue
                path = _crds_path(args[0], reftype)
                if path is None:
                    continue
                cls = _hot_class(HOT_REFTYPES[reftype], "crds://" + os.path.basename(path))
                model, kept = cache.get(path, cls)
                if kept:  # the cache's model stays pristine: the step gets a copy-on-write copy
                    model = shared_arrays.private_copy(shared_arrays.share(model))
                setattr(step, attr, model)
                set_here.append(attr)
            return run(*args, **kwargs)
        finally:
            for attr in set_here:
                setattr(step, attr, None)

    return served


@contextlib.contextmanager
def serving(pipe: Any, cap_gb: float) -> Iterator[ReferenceCache | None]:
    """While the block runs `pipe`, its steps take their references from this worker's cache."""
    cache = cache_for(cap_gb)
    if cache is None:
        yield None
        return
    saved = {}
    for name in pipe.step_defs:
        step = getattr(pipe, name)
        if any(t in HOT_REFTYPES for t in step.reference_file_types):
            saved[name] = step.__dict__.get("run")
            step.run = _serve(cache, step, step.run)
    try:
        yield cache
    finally:
        for name, previous in saved.items():
            step = getattr(pipe, name)
            if previous is None:
                step.__dict__.pop("run", None)
            else:
                step.run = previous
