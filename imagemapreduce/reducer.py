"""The reducer subtask: how cell results become one output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lsst.pex.config as pexConfig

from .engine.sources import is_dask_array
from .image import Exposure
from .pipe_base import Struct, Task
from .psf import CoaddPsf
from .stitch import REDUCE_OPERATIONS, RegionAccumulator, RegionStats

__all__ = ["ImageReducerConfig", "ImageReducer"]


class ImageReducerConfig(pexConfig.Config):
    """Configuration for `ImageReducer`, with LSST's fields and defaults."""

    reduceOperation = pexConfig.ChoiceField(
        dtype=str,
        doc="Operation to use for reducing subimages into new image.",
        default="average",
        allowed={
            "none": "simply return a list of values and don't re-map results into a new image "
            "(noop operation)",
            "copy": "copy subimages back into the same location in a clone of the original image "
            "(pixels not covered stay NaN)",
            "sum": "add subimages into a new image of the original size (pixels not covered stay 0)",
            "average": "same as sum, then divide each pixel by the number of subimages that "
            "contributed to it",
            "coaddPsf": "instead of constructing an Exposure, take a list of returned PSFs and use "
            "CoaddPsf to construct a single PSF that covers the entire input exposure",
        },
    )
    badMaskPlanes = pexConfig.ListField(
        dtype=str,
        doc="Mask planes to set for invalid pixels",
        default=("INVALID_MAPREDUCE", "BAD", "NO_DATA"),
    )


class ImageReducer(Task):
    """Combine the mapper results of every cell, as LSST's ``ImageReducer`` does.

    `run` is the serial, whole-image form of the reduction (LSST's algorithm). `ImageMapReduceTask`
    runs the same arithmetic region by region on Dask, through `prepareOutput` and `finishOutput`.
    A subclass that overrides `run` is honoured: the task then gathers every result and calls it.
    """

    ConfigClass = ImageReducerConfig
    _DefaultName = "ip_diffim_ImageReducer"

    def run(self, mapperResults: Sequence[Struct], exposure: Exposure, **kwargs: Any) -> Struct:
        """Reduce a list of mapper results, in grid order.

        Returns
        -------
        result : `Struct`
            ``Struct(exposure=...)`` for copy, sum and average; ``Struct(result=...)`` with the
            list of results for none, or with a `CoaddPsf` for coaddPsf.
        """
        operation = self.config.reduceOperation
        if operation == "none":
            return Struct(result=mapperResults)
        if operation == "coaddPsf":
            return Struct(result=self._constructPsf(mapperResults, exposure))
        return Struct(exposure=self._reduceImage(mapperResults, exposure, **kwargs))

    def _reduceImage(self, mapperResults: Sequence[Struct], exposure: Exposure, **kwargs: Any) -> Exposure:
        """Stitch the results into a new exposure with one whole-image region (LSST's serial loop)."""
        newExp, badBits = self.prepareOutput(exposure)
        mi = newExp.maskedImage
        acc = RegionAccumulator(
            newExp.getBBox(), mi.mask.array, newExp.dtype, self.config.reduceOperation,
            mi.image.array, mi.variance.array,
        )  # fmt: skip
        for item in _sub_exposures(mapperResults):
            acc.add(item.getBBox(), item.image.array, item.variance.array, item.mask.array)
        stats = acc.finish(badBits)
        components = [(item.getPsf(), item.getBBox()) for item in _sub_exposures(mapperResults)]
        return self.finishOutput(newExp, stats, components)

    def prepareOutput(self, exposure: Exposure) -> tuple[Exposure, int]:
        """Clone the input as the output and add the bad-pixel planes; return it and their bit mask."""
        if any(is_dask_array(p.array) for p in (exposure.image, exposure.mask, exposure.variance)):
            # A lazy input is not read here: the stitcher fills every plane region by region.
            newExp = type(exposure)(exposure.getBBox(), psf=exposure.getPsf(), wcs=exposure.getWcs(),
                                    metadata=dict(exposure.getMetadata()))  # fmt: skip
            newExp.mask._planes = exposure.mask.getMaskPlaneDict()
        else:
            newExp = exposure.clone()
        mask = newExp.mask
        for name in self.config.badMaskPlanes:
            mask.addMaskPlane(name)
        return newExp, mask.getPlaneBitMask(list(self.config.badMaskPlanes))

    def finishOutput(self, newExp: Exposure, stats: RegionStats, components: Sequence[tuple[Any, Any]]) -> Exposure:
        """Log the overlap statistics and attach the CoaddPsf of the cells (sum and average)."""
        operation = self.config.reduceOperation
        if operation == "average" and stats.pixels:
            self.log.info("AVERAGE: Maximum overlap: %f", float(stats.max_count))
            self.log.info("AVERAGE: Average overlap: %f", stats.sum_count / stats.pixels)
            self.log.info("AVERAGE: Minimum overlap: %f", float(stats.min_count))
            self.log.info(
                "AVERAGE: Number of zero pixels: %f (%f%%)",
                float(stats.zero_pixels),
                stats.zero_pixels * 100.0 / stats.pixels,
            )
        if operation in ("sum", "average") and components:
            newExp.setPsf(CoaddPsf([(psf, bbox, 1.0) for psf, bbox in components if psf is not None]))
        return newExp

    def _constructPsf(self, mapperResults: Sequence[Struct], exposure: Exposure) -> CoaddPsf:
        """Build a CoaddPsf from each result's ``subExposure`` (PSF and box) or its ``psf`` and ``bbox``."""
        wcsref = exposure.getWcs()
        components = []
        for res in mapperResults:
            items = res.getDict()
            if "subExposure" in items:
                subExp = res.subExposure
                if subExp.getWcs() != wcsref:
                    raise ValueError("Wcs of subExposure is different from exposure")
                components.append((subExp.getPsf(), subExp.getBBox(), 1.0))
            elif "psf" in items:
                components.append((res.psf, res.bbox, 1.0))
            else:
                raise TypeError(
                    "coaddPsf needs each mapper result to hold `subExposure` (with a PSF) or `psf` and `bbox`; "
                    f"got {sorted(items)}"
                )
        return CoaddPsf(components)


def _sub_exposures(mapperResults: Sequence[Struct]) -> list[Exposure]:
    items = []
    for res in mapperResults:
        item = getattr(res, "subExposure", None)
        if not isinstance(item, Exposure):
            raise TypeError(
                f'Expecting an Exposure type, got {type(item)}. Consider using `reduceOperation="none"`.'
            )
        items.append(item)
    return items
