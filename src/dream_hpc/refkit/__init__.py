"""The offline reference kit: a synthetic NIRCam CRDS cache and MIRAGE_DATA tree from one detector model.

Layout of a kit built with `dream-hpc refkit build --out DIR` (or `build(DIR)`):
  DIR/crds_cache/      CRDS cache for jwst: CRDS_MODE=local, CRDS_PATH=DIR/crds_cache, CRDS_CONTEXT=CONTEXT
  DIR/mirage_data/     MIRAGE_DATA for Mirage: PSF library, linearized darks, cosmic rays, QE flats
  DIR/manifest.json    sha256, size and role of every file, build parameters, kit version, context
  DIR/manifest.json.sha256
  DIR/preview_<det>.png  what the detector model looks like

For Mirage, take linearized_darkfile, psfpath, cosmic_ray_path and pixelflat from `mirage_paths`
(the pixelflat there is the QE flat: the CRDS FLAT also holds the pixel area and would count it
twice), psfwfe=PSF_WFE, psfwfegroup=PSF_WFE_GROUP, cosmicRay suffix `cosmic_ray_suffix(det)`,
add_psf_wings False (the library PSF is complete), and the other Reffiles (mask, superbias,
linearity, saturation, gain, distortion as `astrometric`, photom, area) from the CRDS cache.

Modules: nircam (instrument facts), detector (the detector model), distortion (pysiaf -> model,
pixel areas), photometry (Mirage zeropoints -> PHOTOM), psf (PSF and APCORR), crds_refs /
crds_cache (references and mappings), mirage_data (Mirage files, `mirage_paths`), manifest, preview,
builder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dream_hpc.core.errors import UserError

KIT_VERSION = "1.0"  # bump when the generated content changes for the same parameters
CONTEXT = "jwst_0001.pmap"  # the pinned CRDS context every kit carries


class KitError(UserError):
    """A kit request or lookup that cannot be served; one line naming the fix."""


def build(out: str | Path, **kwargs: Any) -> Path:
    """Build a kit into `out` (detectors, filters, readpatts, ngroups_max, seed, progress); returns
    the manifest path. Defaults: NRCB1 + NRCB5, F150W + F277W, BRIGHT2, 6 groups."""
    from dream_hpc.refkit.builder import build as _build

    return _build(out, **kwargs)


def mirage_paths(mirage_data: Path, detector: str, filter: str, readpatt: str,  # noqa: A002
                 ngroups: int | None = None, dark_choice: int = 0) -> dict[str, Path]:
    """Mirage yaml key -> kit file/directory for one exposure (see mirage_data.mirage_paths)."""
    from dream_hpc.refkit.mirage_data import mirage_paths as _paths

    return _paths(mirage_data, detector, filter, readpatt, ngroups, dark_choice)


def mirage_files(mirage_data: Path, detector: str, filter: str, readpatt: str,  # noqa: A002
                 ngroups: int | None = None) -> list[Path]:
    """Every MIRAGE_DATA file one exposure reads: its linearized dark, QE flat, PSF library file and
    cosmic-ray libraries (the directories `mirage_paths` names narrowed to this detector and filter)."""
    from dream_hpc.refkit import mirage_data as md
    from dream_hpc.refkit.nircam import detector as _detector

    paths = mirage_paths(mirage_data, detector, filter, readpatt, ngroups)
    det = _detector(detector)
    root = Path(mirage_data)
    crs = sorted(md.cr_dir(root).glob(f"CRs_MCD1.7_*_{md.cr_suffix(det)}.fits"))
    return [paths["linearized_darkfile"], paths["pixelflat"], md.psf_file(root, det, filter.upper()), *crs]


def cosmic_ray_suffix(detector: str) -> str:
    """The `cosmicRay: suffix` Mirage needs for `detector` with this kit (e.g. IPC_NIRCam_B1)."""
    from dream_hpc.refkit.mirage_data import cr_suffix
    from dream_hpc.refkit.nircam import InstrumentError
    from dream_hpc.refkit.nircam import detector as _detector

    try:
        return cr_suffix(_detector(detector))
    except InstrumentError as e:
        raise KitError(str(e)) from None


PSF_WFE = "predicted"  # simSignals: psfwfe for the kit's PSF library
PSF_WFE_GROUP = 0  # simSignals: psfwfegroup
