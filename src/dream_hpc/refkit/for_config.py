"""The reference kit a survey config needs: its detectors, filters, readout and subarray.

`dream-hpc refkit build --for CONFIG` builds exactly that kit, so an error about a missing or damaged
kit can name one command that works for that config (`make kit` builds the default kit, which may
lack the config's detectors, filters or read pattern).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from dream_hpc.config import SurveyConfig


@dataclass(frozen=True)
class KitRequest:
    detectors: list[str]
    filters: list[str]
    readpatts: list[str]
    ngroups_max: int
    subarrays: list[str]
    out: Path  # where the config expects the kit (the parent of references.crds_path)


def kit_request(cfg: SurveyConfig) -> KitRequest:
    """What `refkit build` must be given for every exposure of `cfg` to find its references."""
    from dream_hpc.refkit.nircam import InstrumentError, detector

    inst = cfg.instrument
    detectors = [d.upper() for d in inst.detectors]
    filters: list[str] = []
    for det in detectors:
        try:
            short = detector(det).short_wave
        except InstrumentError:
            short = True  # the builder names the unknown detector itself
        for sw, lw in inst.filter_pairs:
            f = (sw if short else lw).upper()
            if f not in filters:
                filters.append(f)
    return KitRequest(detectors=detectors, filters=filters, readpatts=[inst.readout.readpatt.upper()],
                      ngroups_max=int(inst.readout.ngroups), subarrays=[inst.subarray.upper()], out=kit_root(cfg))


def kit_root(cfg: SurveyConfig) -> Path:
    """The kit directory the config points at (references.crds_path = KIT/crds_cache)."""
    crds = cfg.resolve(cfg.references.crds_path)
    return crds.parent if crds.name == "crds_cache" else crds.parent / "refkit"


def build_command(cfg: SurveyConfig) -> str:
    """The exact command that builds the kit this config needs, where the config looks for it."""
    config = cfg.source or "CONFIG"
    return f"dream-hpc refkit build --for {config} --out {kit_root(cfg)}"
