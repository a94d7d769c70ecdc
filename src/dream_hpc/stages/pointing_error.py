"""Where an exposure really pointed: the nominal pointing plus a seeded per-visit and per-dither error.

A real JWST visit lands where its guide star's catalogue position says, so its exposures are off
their planned pointing by tens of mas (and a small roll) while their headers carry the planned one;
tweakreg is what removes it. Here every exposure is rendered at its true pointing and keeps the
nominal header WCS.

How: an attitude error is a rotation of the sky, so an image taken at the true attitude is, pixel for
pixel, an image taken at the nominal attitude of a sky moved by the inverse rotation. Mirage is given
the nominal pointing (its yaml `Telescope` ra/dec/rotation, from which it writes every header WCS
keyword consistently) and the sources at `to_rendered(sky)` positions. The truth of each exposure
(true reference point and roll) is then `true_wcs(pixel) = apply(nominal header wcs(pixel))`.

The rotation is written in the tangent plane of the aperture's nominal reference point (shift plus
roll about that point): on a NIRCam field the difference from a rotation on the sphere is < 1 uas.
Every draw derives from the survey seed and the visit / exposure id (never the rank or the order), so
all detectors of one exposure share its error and a rerun reproduces it exactly.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from dream_hpc.core.workunit import WorkUnit, derive_seed
from dream_hpc.plan import footprint

MAS = 1e-3  # arcsec per milliarcsecond (the tangent plane is in arcsec: plan/footprint.py)


@dataclass(frozen=True)
class PointingError:
    """One exposure's pointing error: tangent-plane shift (mas, East and North) and roll (arcsec).

    Positive `de_mas` means the telescope really pointed East of its nominal pointing (the sources
    then appear West of where the header WCS predicts)."""

    de_mas: float
    dn_mas: float
    roll_arcsec: float
    visit_de_mas: float
    visit_dn_mas: float

    @property
    def total_mas(self) -> float:
        return math.hypot(self.de_mas, self.dn_mas)

    def to_dict(self) -> dict[str, float]:
        d = dataclasses.asdict(self)
        d["total_mas"] = self.total_mas
        return d


def visit_key(unit: WorkUnit) -> str:
    """The visit's id: every exposure and detector of it shares its guide-star acquisition."""
    return f"jw{unit.program}{unit.observation:03d}{unit.visit:03d}"


def exposure_key(unit: WorkUnit) -> str:
    """The exposure's id without the detector: SW and LW detectors see one telescope pointing."""
    return unit.unit_id.rsplit("_", 1)[0]


def draw(cfg: Any, unit: WorkUnit) -> PointingError:
    """The seeded pointing error of `unit` (zero when simulation.pointing_error.enabled is false)."""
    pe = cfg.simulation.pointing_error
    if not pe.enabled:
        return PointingError(0.0, 0.0, 0.0, 0.0, 0.0)
    seed = int(cfg.survey.seed)
    visit_rng = np.random.default_rng(derive_seed(seed, visit_key(unit), "pointing_error_visit"))
    if pe.fixed_visit_mas > 0:
        angle = visit_rng.uniform(0.0, 2.0 * math.pi)
        ve, vn = pe.fixed_visit_mas * math.sin(angle), pe.fixed_visit_mas * math.cos(angle)
    else:
        ve, vn = (float(v) for v in visit_rng.normal(0.0, pe.visit_sigma_mas, 2))
    roll = float(visit_rng.normal(0.0, pe.roll_sigma_arcsec))
    dither_rng = np.random.default_rng(derive_seed(seed, exposure_key(unit), "pointing_error_dither"))
    de, dn = (float(v) for v in dither_rng.normal(0.0, pe.dither_sigma_mas, 2))
    return PointingError(ve + de, vn + dn, roll, ve, vn)


# --- the sky rotation, in the tangent plane of the nominal reference point -------------------
def _rotate(xi: np.ndarray, eta: np.ndarray, roll_arcsec: float) -> tuple[np.ndarray, np.ndarray]:
    """Rotate tangent-plane vectors East of North by `roll_arcsec` (a roll of +r raises PA_V3 by r); any unit."""
    t = math.radians(roll_arcsec / 3600.0)
    c, s = math.cos(t), math.sin(t)
    return xi * c + eta * s, -xi * s + eta * c


def apply(err: PointingError, unit: WorkUnit, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    """Where the true attitude sees what the nominal attitude would put at (ra, dec): the truth WCS is
    `apply(nominal header wcs(pixel))`."""
    xi, eta = footprint.tangent_offsets(ra, dec, unit.ra, unit.dec)
    xi, eta = _rotate(xi, eta, err.roll_arcsec)
    return footprint.from_tangent(xi + err.de_mas * MAS, eta + err.dn_mas * MAS, unit.ra, unit.dec)


def to_rendered(err: PointingError, unit: WorkUnit, ra: Any, dec: Any) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `apply`: where to hand a source at true (ra, dec) to Mirage at the nominal pointing."""
    xi, eta = footprint.tangent_offsets(ra, dec, unit.ra, unit.dec)
    xi, eta = _rotate(xi - err.de_mas * MAS, eta - err.dn_mas * MAS, -err.roll_arcsec)
    return footprint.from_tangent(xi, eta, unit.ra, unit.dec)


def rendered_sources(err: PointingError, unit: WorkUnit, sources: Any) -> Any:
    """`sources` (catalog.reader.Sources) moved to where Mirage must draw them at the nominal pointing.
    Position angles turn with the roll (East of North on the true sky -> in the nominal frame)."""
    if err.total_mas == 0.0 and err.roll_arcsec == 0.0:
        return sources
    ra, dec = to_rendered(err, unit, sources.ra, sources.dec)
    return dataclasses.replace(sources, ra=ra, dec=dec, pa=np.asarray(sources.pa, float) - err.roll_arcsec / 3600.0)


def truth_record(err: PointingError, unit: WorkUnit) -> dict[str, Any]:
    """What the journal and the truth product keep per exposure: nominal and true reference point and roll."""
    ra_t, dec_t = apply(err, unit, [unit.ra], [unit.dec])
    return {"unit_id": unit.unit_id, "visit": visit_key(unit), "exposure": exposure_key(unit),
            "nominal": {"ra_ref": unit.ra, "dec_ref": unit.dec, "pa_v3": unit.pa_v3},
            "true": {"ra_ref": float(ra_t[0]), "dec_ref": float(dec_t[0]),
                     "pa_v3": unit.pa_v3 + err.roll_arcsec / 3600.0},
            "error": err.to_dict(),
            "convention": "error = true - nominal; de/dn in mas on the sky (East, North) at the aperture "
                          "reference point; roll in arcsec East of North; headers carry the nominal pointing"}


def from_record(record: dict[str, Any]) -> PointingError:
    e = record["error"]
    return PointingError(e["de_mas"], e["dn_mas"], e["roll_arcsec"], e["visit_de_mas"], e["visit_dn_mas"])
