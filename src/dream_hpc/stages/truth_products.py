"""The run's truth products, for users who judge their own reductions: RUN/truth/.

Per exposure: `<unit>_pointing.json` (nominal and true pointing, the injected error) and
`<unit>_sources.ecsv` (the sources as simulated: true sky position, where Mirage drew them at the
nominal pointing, magnitude in the unit's filter, kind and size). Per filter (written by the science
check): `<filter>_matched.ecsv`, the mosaic catalog matched to the truth. The `_uncal` of each
exposure stays in RUN/exposures for anyone who runs their own pipeline.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dream_hpc.core.rundir import atomic_path, atomic_write_text
from dream_hpc.core.workunit import WorkUnit
from dream_hpc.stages import pointing_error


def truth_dir(run: Any) -> Path:
    path = run.root / "truth"
    path.mkdir(parents=True, exist_ok=True)
    return path


def write_exposure_truth(run: Any, unit: WorkUnit, error: pointing_error.PointingError,
                         sources: Any) -> dict[str, Path]:
    """Write the pointing and the simulated source list of `unit`; returns {kind: path}."""
    from astropy.table import Table

    out = truth_dir(run)
    pointing = out / f"{unit.unit_id}_pointing.json"
    atomic_write_text(pointing, json.dumps(pointing_error.truth_record(error, unit), indent=1) + "\n")
    ra_r, dec_r = pointing_error.to_rendered(error, unit, sources.ra, sources.dec)
    table = Table({
        "row": np.asarray(sources.row, int), "id": np.asarray(sources.id).astype(str),
        "kind": np.where(np.asarray(sources.is_star, bool), "star", "galaxy"),
        "ra": np.asarray(sources.ra, float), "dec": np.asarray(sources.dec, float),
        "ra_rendered": np.asarray(ra_r, float), "dec_rendered": np.asarray(dec_r, float),
        f"mag_{unit.filter.lower()}": np.asarray(sources.mags[unit.filter], float),
        "radius_arcsec": np.asarray(sources.radius, float), "axis_ratio": np.asarray(sources.axis_ratio, float),
        "sersic": np.asarray(sources.sersic, float), "pa_deg": np.asarray(sources.pa, float),
    })
    for name in ("ra", "dec", "ra_rendered", "dec_rendered"):
        table[name].format = ".9f"
    table.meta["comments"] = [
        f"dream-hpc truth for {unit.unit_id}: sources handed to Mirage (margin included, before its mag cut)",
        "ra/dec: true sky position (deg); ra/dec_rendered: where Mirage drew them at the nominal (header) pointing",
    ]
    sources_path = out / f"{unit.unit_id}_sources.ecsv"
    with atomic_path(sources_path) as tmp, open(tmp, "w") as f:
        table.write(f, format="ascii.ecsv")
    return {"pointing": pointing, "sources": sources_path}


def read_pointing(run: Any, unit_id: str) -> dict[str, Any] | None:
    path = run.root / "truth" / f"{unit_id}_pointing.json"
    return json.loads(path.read_text()) if path.is_file() else None


def write_matched_catalog(run: Any, filt: str, check: dict[str, Any]) -> Path:
    """RUN/truth/<filter>_matched.ecsv: every input source on the mosaic, matched (or not) to the mosaic
    catalog: true position and magnitude, kind, predicted S/N, whether it is in the judged sample, the
    output total and isophotal magnitudes and the position offset (mosaic pixels)."""
    from astropy.table import Table

    p = check["_points"]
    table = Table({"row": np.asarray(p["row"], int), "ra": p["ra"], "dec": p["dec"],
                   "kind": np.where(p["is_star"], "star", "galaxy"), "mag_in": p["mag_in"],
                   "half_light_px": p["size_px"], "snr_predicted": p["snr"], "judged": p["sample"],
                   "matched": p["matched"], "aper_total_abmag": p["mag_total"], "isophotal_abmag": p["mag_iso"],
                   "dx_px": p["dx"], "dy_px": p["dy"]})
    table["ra"].format = table["dec"].format = ".9f"
    table.meta["comments"] = [f"dream-hpc: {filt} input (truth) sources on the mosaic matched to its catalog "
                              f"within {check.get('match_radius_arcsec')} arcsec; offsets = output - truth"]
    if check.get("tiles"):  # judged per tile (stages/tile_science.py): the others were counted, not kept
        table.meta["comments"].append(f"judged per tile: only sources judged or matched are listed; "
                                      f"{check['tiles']['sources_counted_not_kept']} more on the mosaic were counted")
    path = truth_dir(run) / f"{filt.lower()}_matched.ecsv"
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        table.write(f, format="ascii.ecsv")
    return path
