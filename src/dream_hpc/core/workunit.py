"""A work unit (one exposure of one detector): its identity, jwst file names and seeds.

Unit ids follow jwst exposure naming, so every product of a unit is a name any jwst user knows:
``jw<program><obs><visit>_<visitgroup><seq><activity>_<exposure>_<detector>_<suffix>.fits``.
Seeds come from the survey seed and the unit id alone, never from rank or execution order, so a
unit gives the same pixels whichever rank runs it and whenever.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any

# The per-unit stages, in order, and the product each leaves in RUN/exposures (jwst suffixes): a fact of a
# unit's identity that the journal's read model, the engine and the stages share.
STAGES = ("simulate", "detector1", "image2")
PRODUCT_SUFFIX = {"simulate": "uncal", "detector1": "rate", "image2": "cal"}
SEED_PURPOSES = ("poisson", "cosmic_ray", "numpy")


def derive_seed(survey_seed: int, unit_id: str, purpose: str) -> int:
    """A 32-bit seed from (survey seed, unit id, purpose): stable across runs, ranks and machines."""
    digest = hashlib.sha256(f"dream-hpc:{survey_seed}:{unit_id}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % (2**32 - 1) + 1  # Mirage wants 0 < seed < 2**32


@dataclass
class WorkUnit:
    program: str
    observation: int
    visit: int
    visit_group: int
    sequence: int
    activity: int
    exposure: int
    detector: str  # e.g. NRCB1
    filter: str  # e.g. F150W
    pupil: str  # CLEAR for wide filters
    subarray: str  # e.g. SUB400P
    readpatt: str
    ngroups: int
    nints: int
    ra: float  # deg: sky position of the aperture reference point
    dec: float
    pa_v3: float  # deg
    date_obs: str  # YYYY-MM-DD
    time_obs: str  # HH:MM:SS.sss
    pointing_index: int = 0
    dither_index: int = 0
    pair_index: int = 0
    dither_x_arcsec: float = 0.0  # offset of this dither in the ideal (aperture) frame
    dither_y_arcsec: float = 0.0
    seeds: dict[str, int] = field(default_factory=dict)
    est_cpu_s: float = 0.0  # planned cost (simulate + detector1 + image2), CPU seconds
    est_mem_mb: float = 0.0  # planned peak memory of the heaviest stage

    @property
    def unit_id(self) -> str:
        return (f"jw{self.program}{self.observation:03d}{self.visit:03d}_{self.visit_group:02d}"
                f"{self.sequence:1d}{self.activity:02d}_{self.exposure:05d}_{self.detector.lower()}")

    @property
    def aperture(self) -> str:
        return f"{self.detector.upper()}_{self.subarray}"

    @property
    def channel(self) -> str:
        return "LONG" if self.detector.upper().endswith("5") else "SHORT"

    def filename(self, suffix: str, ext: str = "fits") -> str:
        """jwst product name for this unit, e.g. filename('cal') -> jw..._nrcb1_cal.fits."""
        return f"{self.unit_id}_{suffix}.{ext}"

    def with_seeds(self, survey_seed: int) -> WorkUnit:
        self.seeds = {p: derive_seed(survey_seed, self.unit_id, p) for p in SEED_PURPOSES}
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["unit_id"] = self.unit_id
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WorkUnit:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})
