"""One PNG per detector showing what the kit's detector model looks like (DIR/preview_<det>.png)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dream_hpc.refkit.detector import DetectorModel
from dream_hpc.refkit.psf import OVERSAMPLE, PsfModel


def _binned(a: np.ndarray, f: int = 8) -> np.ndarray:
    n = a.shape[0] // f
    return a[: n * f, : n * f].reshape(n, f, n, f).mean(axis=(1, 3))


def write_preview(path: Path, model: DetectorModel, filt: str, psf: PsfModel, apcorr_rows: list[tuple]) -> Path:
    """Superbias, QE flat, pixel area, dark current, bad pixels, PSF and encircled energy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    det = model.det.name
    fig, axes = plt.subplots(2, 4, figsize=(16, 8))
    panels = [
        ("superbias (DN)", _binned(model.superbias), None),
        (f"relative QE, {filt} (Mirage pixelflat)", _binned(model.qe(filt)), (0.97, 1.03)),
        ("pixel area / nominal (from pysiaf)", _binned(model.relative_area), None),
        ("log10 dark current (DN/s), 8x8 max", np.log10(np.maximum(
            model.dark_rate[:2048, :2048].reshape(256, 8, 256, 8).max(axis=(1, 3)), 1e-4)), None),
        ("read noise CDS (DN)", _binned(model.readnoise), None),
        ("flagged pixels per 8x8 (DO_NOT_USE etc.)", _binned(((model.dq & ~np.uint32(2**31)) != 0) * 1.0), None),
    ]
    for ax, (title, img, lim) in zip(axes.flat[:6], panels, strict=True):
        vmin, vmax = lim if lim else np.percentile(img, [1, 99])
        im = ax.imshow(img, origin="lower", cmap="viridis", vmin=vmin, vmax=vmax, extent=(0, 2048, 0, 2048))
        ax.set_title(title, fontsize=10)
        fig.colorbar(im, ax=ax, shrink=0.8)
    ax = axes.flat[6]
    n = psf.data.shape[0]
    extent = np.array([-1, 1, -1, 1]) * n / OVERSAMPLE / 2
    ax.imshow(np.log10(np.maximum(psf.data / psf.data.max(), 1e-6)), origin="lower", extent=extent, cmap="magma")
    ax.set_title(f"PSF {filt} (log, detector px), FWHM {psf.fwhm_pix:.2f} px", fontsize=10)
    ax = axes.flat[7]
    ee, radius, apcorr = (np.array([r[i] for r in apcorr_rows]) for i in (0, 1, 2))
    ax.plot(radius, ee, "o-", label="encircled energy (drizzled)")
    ax.plot(radius, 1 / apcorr, "x", label="1 / APCORR")
    ax.set_xlabel("radius (native pixels)")
    ax.set_title(f"APCORR table, {filt}", fontsize=10)
    ax.legend(fontsize=8)
    fig.suptitle(f"dream-hpc reference kit: {det} ({model.det.dms}), seed {model.seed}")
    fig.tight_layout()
    fig.savefig(path, dpi=60, metadata={"Software": None})
    plt.close(fig)
    return path
