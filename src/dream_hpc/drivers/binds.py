"""The host paths a survey touches, as container binds (`dream-hpc slurm binds CONFIG --run RUN`).

slurm/full_survey.sh and slurm/image3.sh run dream-hpc inside the Apptainer image with every path
the config names bound at the same place, so one config works with and without the image. The
config is the only source of those paths (catalog, CRDS cache, MIRAGE_DATA, APT files); this
module lists them, innermost-duplicates removed, without checking that they exist: the command
may run inside the image, where host paths are not visible, and the job script keeps only the
ones that exist on the host.
"""

from __future__ import annotations

from pathlib import Path

from dream_hpc.config import SurveyConfig


def config_paths(cfg: SurveyConfig) -> list[Path]:
    """Paths the config reads from: its directory, the catalog's, the reference caches (and a kit
    manifest beside them), the APT exports' directories."""
    paths = []
    if cfg.source is not None:
        paths.append(cfg.source.parent)
    paths.append(cfg.resolve(cfg.catalog.path).parent)
    for ref in (cfg.references.crds_path, cfg.references.mirage_data):
        cache = cfg.resolve(ref)
        paths.append(cache)
        # A reference kit's manifest sits beside its caches and is part of their recorded identity
        # (runinfo.cache_manifest): without it, the same kit would look different inside the image.
        paths += [cache.parent / "manifest.json", cache.parent / "manifest.json.sha256"]
    apt = cfg.pointings.apt
    for name in (apt.xml, apt.pointing):
        if name:
            paths.append(cfg.resolve(name).parent)
    return paths


def outermost(paths: list[Path]) -> list[Path]:
    """The paths with duplicates and paths nested inside another one removed, order kept."""
    unique = list(dict.fromkeys(Path(p) for p in paths))
    return [p for p in unique if not any(q != p and q in p.parents for q in unique)]


def bind_paths(cfg: SurveyConfig, run: Path | None = None) -> list[Path]:
    paths = config_paths(cfg)
    if run is not None:
        paths.insert(0, run.resolve())
    return outermost(paths)
