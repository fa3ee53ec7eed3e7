"""PSF homogenisation: a mapper that brings every cell of an exposure to one Gaussian target PSF.

This is the operation `ImageMapReduceTask` exists for: it changes across the field. Each cell is
convolved with its own Gaussian matching kernel, of variance ``target^2 - local^2`` where
``local`` is the PSF's sigma at the cell's centre, so that stars everywhere end up with the same
width. With overlapping cells and ``reduceOperation='average'`` the kernel varies smoothly
between cells. See `PsfMatchMapper`.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np

from .geom import Box2I, Point2D
from .image import Exposure
from .mapper import ImageMapper, ImageMapperConfig
from .mappers import EDGE_MODES
from .pipe_base import Struct
from .psf import GaussianPsf, Psf

__all__ = [
    "PsfMatchMapperConfig",
    "PsfMatchMapper",
    "psf_sigma",
    "max_psf_sigma",
    "matching_sigma",
    "matching_kernel_1d",
]

# Kernel variances below this (pixels^2) are treated as no convolution at all: the kernel would
# be a delta function to within float32 rounding anyway.
_MIN_KERNEL_VARIANCE = 1e-6


def psf_sigma(psf: Psf, position: Point2D) -> float:
    """Return the PSF's Gaussian-equivalent sigma at ``position``: the determinant radius of `computeShape`.

    Analytic for (varying) Gaussian PSFs; adaptive moments of the kernel image for others.
    """
    return float(psf.computeShape(position).getDeterminantRadius())


@functools.lru_cache(maxsize=64)
def _max_psf_sigma_cached(psf: Psf, box: tuple[int, int, int, int], points: int) -> float:
    x0, y0, x1, y1 = box
    xs, ys = np.linspace(x0, x1, points), np.linspace(y0, y1, points)
    if hasattr(psf, "sigma_at") and hasattr(psf, "sigma_range"):
        # An analytic sigma is cheap: search a fine grid, the corners and edges included.
        fine_x, fine_y = np.linspace(x0, x1, 129), np.linspace(y0, y1, 129)
        return float(np.max(psf.sigma_at(*np.meshgrid(fine_x, fine_y))))
    return max(psf_sigma(psf, Point2D(float(x), float(y))) for x in xs for y in ys)


def max_psf_sigma(psf: Psf, bbox: Box2I, points: int = 9) -> float:
    """Return the largest PSF sigma over ``bbox``, sampled on a ``points`` x ``points`` grid.

    The target that every cell can be matched to without sharpening. Results are cached per
    (PSF, box), since every cell of a run asks the same question.
    """
    box = (bbox.getMinX(), bbox.getMinY(), bbox.getMaxX(), bbox.getMaxY())
    try:
        return _max_psf_sigma_cached(psf, box, int(points))
    except TypeError:  # an unhashable third-party PSF: no cache
        return _max_psf_sigma_cached.__wrapped__(psf, box, int(points))


def matching_sigma(local_sigma: float, target_sigma: float) -> float:
    """Return the Gaussian kernel sigma taking ``local_sigma`` to ``target_sigma``, 0 if none is needed.

    Gaussians convolve by adding variances, so the kernel has ``sqrt(target^2 - local^2)``.
    A local PSF already at least as wide as the target cannot be sharpened by a kernel: 0.
    """
    variance = target_sigma**2 - local_sigma**2
    return math.sqrt(variance) if variance > _MIN_KERNEL_VARIANCE else 0.0


def matching_kernel_1d(sigma: float, radius: int) -> np.ndarray:
    """Return a normalised sampled 1-d Gaussian on ``[-radius, radius]`` of discrete variance ``sigma^2``.

    A Gaussian sampled at pixel centres has a variance below ``sigma^2`` when ``sigma`` is well
    under a pixel (and, slightly, when truncated). Since variances add exactly under discrete
    convolution, the sampling width is solved for so that the kernel adds exactly ``sigma^2``:
    a cell whose PSF is a hair narrower than the target then reaches the target, not less.

    Parameters
    ----------
    sigma : `float`
        The required standard deviation, pixels, > 0.
    radius : `int`
        Half-width of the kernel, >= 1; its variance can be at most ``radius (radius + 1) / 3``.
    """
    from scipy.optimize import brentq

    offsets = np.arange(-radius, radius + 1, dtype=np.float64)
    target = sigma * sigma
    if not 0 < target < radius * (radius + 1) / 3.0:
        raise ValueError(f"a {2 * radius + 1}-pixel kernel cannot have sigma {sigma}; increase the radius")

    def kernel(width: float) -> np.ndarray:
        values = np.exp(-0.5 * (offsets / width) ** 2)
        return values / values.sum()

    def excess(width: float) -> float:
        return float(kernel(width) @ offsets**2) - target

    # The discrete variance rises monotonically from 0 to the flat kernel's as the width grows.
    upper = max(2.0 * sigma, 1.0)
    while excess(upper) < 0:
        upper *= 2.0
    return kernel(brentq(excess, 1e-3, upper, xtol=1e-14, rtol=1e-14))


def _correlate(array: np.ndarray, kernel: np.ndarray, mode: str) -> np.ndarray:
    """Correlate along both axes with a symmetric 1-d kernel (separable 2-d convolution)."""
    from scipy import ndimage

    out = ndimage.correlate1d(array, kernel, axis=0, mode=mode)
    return ndimage.correlate1d(out, kernel, axis=1, mode=mode)


def _grow_bits(mask: np.ndarray, bits: list[int], radius: int) -> np.ndarray:
    """Spread each bit to every pixel within ``radius`` (a square: the separable kernel's support)."""
    from scipy import ndimage

    grown = mask.copy()
    size = 2 * radius + 1
    for bit in bits:
        flagged = (mask & bit) != 0
        if flagged.any():
            spread = ndimage.maximum_filter(flagged, size=size, mode="constant", cval=False)
            grown[spread] |= bit
    return grown


class PsfMatchMapperConfig(ImageMapperConfig):
    """Configuration for `PsfMatchMapper`."""

    targetSigma = pexConfig.Field(
        dtype=float, optional=True, default=None, check=lambda s: s > 0,
        doc="Sigma of the Gaussian target PSF, pixels. None: the largest PSF sigma over the exposure "
        "(sampled on a targetSearchPoints grid), so every cell can be matched. A targetSigma keyword "
        "to ImageMapReduceTask.run overrides both.",
    )  # fmt: skip
    targetSearchPoints = pexConfig.Field(
        dtype=int, default=9, check=lambda n: n >= 2,
        doc="Grid points per axis on which the largest PSF sigma is searched when targetSigma is None "
        "(PSFs with an analytic sigma_at are searched on a fine grid instead).",
    )  # fmt: skip
    kernelTruncate = pexConfig.Field(
        dtype=float, default=4.0, check=lambda t: t >= 2,
        doc="Radius of the matching kernel in kernel sigmas, when kernelSize is None.",
    )  # fmt: skip
    kernelSize = pexConfig.Field(
        dtype=int, optional=True, default=None, check=lambda n: n >= 3 and n % 2 == 1,
        doc="Full width of the matching kernel in pixels (odd). None: 2 * ceil(kernelTruncate * sigma) + 1.",
    )  # fmt: skip
    maskGrowBits = pexConfig.ListField(
        dtype=str, default=("BAD", "SAT"),
        doc="Mask planes spread by the kernel radius, since the convolution smears those pixels into "
        "their neighbours. Planes the mask does not have are skipped.",
    )  # fmt: skip
    edgeMode = pexConfig.ChoiceField(
        dtype=str, default="nearest",
        doc="How the convolution extends the expanded cell beyond its edges (scipy.ndimage modes).",
        allowed=EDGE_MODES,
    )  # fmt: skip
    outputPsfSize = pexConfig.Field(
        dtype=int, optional=True, default=None, check=lambda n: n >= 3,
        doc="Width and height of the GaussianPsf attached to each output cell. None: "
        "2 * ceil(5 * sigma) + 1.",
    )  # fmt: skip


class PsfMatchMapper(ImageMapper):
    """Convolve each cell to a common Gaussian PSF of sigma ``targetSigma``.

    For each cell: the local PSF sigma at the cell's centre (`psf_sigma` of the exposure's PSF),
    a Gaussian kernel of sigma ``sqrt(target^2 - local^2)`` (none if the local PSF is already at
    least as wide), a separable convolution of the expanded cell, and its core returned. The
    variance is convolved with the squared kernel (exact for independent pixels), the ``maskGrowBits``
    planes are spread by the kernel radius, and the output PSF is a `GaussianPsf` of the target
    sigma (of the local sigma where it could not be matched). The task's ``sum``/``average``
    reducer turns those into a `CoaddPsf`.

    Notes
    -----
    The output core equals convolving the whole image (with the same kernel) only if the border
    is at least the kernel radius, ``ceil(kernelTruncate * sigma)``, on every side that is not
    the image's edge; a smaller border is logged as a warning. At the image's edges the
    expanded cell ends where the image does, so ``edgeMode`` applies exactly as on the whole image.

    Within a cell the kernel is constant while the PSF still varies, so a star off the cell's
    centre is matched to ``target^2 + local(star)^2 - local(centre)^2``; overlapping cells averaged
    together cancel this to first order. Keep cells small compared to the scale on which the PSF
    changes. The ``average`` reducer weights every covering cell equally, so where neighbouring
    cells' kernels differ a star straddling a cell edge is a patchwork of differently matched
    parts: its width and aperture flux then err by a fraction of the kernel difference between
    cells (for a PSF widening 1.5x across 512 px, 64 px cells stepped by 32: widths within 1.5%,
    fluxes within 0.5%). Non-Gaussian PSFs are matched in second moments only: the output is
    close to, not exactly, the Gaussian target. NaN pixels spread over the kernel's footprint;
    the reducer skips them where another cell covers the pixel.
    """

    ConfigClass = PsfMatchMapperConfig
    _DefaultName = "imr_PsfMatchMapper"

    def resolveTargetSigma(self, psf: Psf, fullBBox: Box2I, **kwargs: Any) -> float:
        """Return the target sigma: the ``targetSigma`` keyword, else the config, else `max_psf_sigma`."""
        target = kwargs.get("targetSigma")
        if target is None:
            target = self.config.targetSigma
        if target is None:
            target = max_psf_sigma(psf, fullBBox, self.config.targetSearchPoints)
        target = float(target)
        if not (math.isfinite(target) and target > 0):
            raise ValueError(f"targetSigma must be finite and > 0, got {target}")
        return target

    def reach(self, exposure: Exposure | None = None) -> int | None:
        """Return the widest matching kernel's half-width in pixels over ``exposure`` (None: unknown).

        ``kernelSize // 2`` when the kernel size is fixed; otherwise the kernel is widest where the
        PSF is narrowest, so the PSF is sampled on a ``targetSearchPoints`` grid (an exposure
        without a PSF, or no exposure, gives None).
        """
        if self.config.kernelSize is not None:
            return self.config.kernelSize // 2
        psf = exposure.getPsf() if exposure is not None else None
        if psf is None:
            return None
        bbox = exposure.getBBox()
        target = self.resolveTargetSigma(psf, bbox)
        n = self.config.targetSearchPoints
        xs = np.linspace(bbox.getMinX(), bbox.getMaxX(), n)
        ys = np.linspace(bbox.getMinY(), bbox.getMaxY(), n)
        narrowest = min(psf_sigma(psf, Point2D(float(x), float(y))) for x in xs for y in ys)
        return self.kernelRadius(matching_sigma(narrowest, target))

    def kernelRadius(self, sigma: float) -> int:
        """Return the matching kernel's half-width in pixels for a kernel of ``sigma`` (0: no kernel)."""
        if sigma <= 0:
            return 0
        if self.config.kernelSize is not None:
            return self.config.kernelSize // 2
        return max(1, math.ceil(self.config.kernelTruncate * sigma))

    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Match one cell to the target PSF.

        Returns
        -------
        result : `Struct`
            ``subExposure`` (the matched cell, with the cell's bbox), ``localSigma``,
            ``kernelSigma`` and ``targetSigma`` (pixels).
        """
        psf = expandedSubExposure.getPsf()
        if psf is None:
            raise ValueError("PsfMatchMapper needs an exposure with a PSF: set one with exposure.setPsf(...)")
        cellBBox = subExposure.getBBox()
        target = self.resolveTargetSigma(psf, fullBBox, **kwargs)
        local = psf_sigma(psf, cellBBox.getCenter())
        kernelSigma = matching_sigma(local, target)
        if local > target * (1.0 + 1e-3):
            self.log.warning(
                "Cell %s: local PSF sigma %.4g exceeds the target %.4g; it cannot be sharpened and "
                "is left as is",
                cellBBox, local, target,
            )  # fmt: skip
        radius = self.kernelRadius(kernelSigma)
        self._checkBorder(cellBBox, expandedSubExposure.getBBox(), fullBBox, radius)

        mi = expandedSubExposure.maskedImage
        core = cellBBox.slices(expandedSubExposure.getXY0())
        if radius > 0:
            kernel = matching_kernel_1d(kernelSigma, radius)
            mode = self.config.edgeMode
            image = _correlate(mi.image.array.astype(np.float64), kernel, mode)[core]
            variance = _correlate(mi.variance.array.astype(np.float64), kernel**2, mode)[core]
            mask = _grow_bits(mi.mask.array, self._growBits(mi.mask), radius)[core]
        else:
            image, variance, mask = mi.image.array[core], mi.variance.array[core], mi.mask.array[core]
        outSigma = max(target, local)
        size = self.config.outputPsfSize or 2 * math.ceil(5.0 * outSigma) + 1
        out = type(expandedSubExposure).from_arrays(
            np.array(image, dtype=mi.image.array.dtype),
            np.array(mask, dtype=mi.mask.array.dtype),
            np.array(variance, dtype=mi.variance.array.dtype),
            xy0=cellBBox.getBegin(),
            psf=GaussianPsf(size, size, outSigma),
            wcs=expandedSubExposure.getWcs(),
            planeDict=mi.mask.getMaskPlaneDict(),
        )
        return Struct(subExposure=out, localSigma=local, kernelSigma=kernelSigma, targetSigma=target)

    def _growBits(self, mask: Any) -> list[int]:
        planes = mask.getMaskPlaneDict()
        return [1 << planes[name] for name in self.config.maskGrowBits if name in planes]

    def _checkBorder(self, cell: Box2I, expanded: Box2I, full: Box2I, radius: int) -> None:
        """Warn when the border is thinner than the kernel radius on a side inside the image."""
        sides = (
            (cell.getMinX() - expanded.getMinX(), expanded.getMinX() == full.getMinX()),
            (expanded.getMaxX() - cell.getMaxX(), expanded.getMaxX() == full.getMaxX()),
            (cell.getMinY() - expanded.getMinY(), expanded.getMinY() == full.getMinY()),
            (expanded.getMaxY() - cell.getMaxY(), expanded.getMaxY() == full.getMaxY()),
        )
        thinnest = min((border for border, at_edge in sides if not at_edge), default=radius)
        if thinnest < radius:
            self.log.warning(
                "Cell %s: border %d px is thinner than the matching kernel radius %d px; the cell's "
                "edges will differ from convolving the whole image. Increase borderSizeX/Y.",
                cell, thinnest, radius,
            )  # fmt: skip
