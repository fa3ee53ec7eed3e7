"""The reducer subtask: how cell results become one output."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import lsst.pex.config as pexConfig
import numpy as np

from ._lazy import is_dask_array
from .geom import Box2I
from .image import Exposure
from .pipe_base import Struct, Task
from .psf import CoaddPsf, WindowedCoaddPsf
from .stitch import RegionAccumulator, RegionStats, WeightedRegionAccumulator
from .stitch_planes import PlaneLayout, conform_piece_mask, region_planes
from .weights import Weighting

__all__ = ["ImageReducerConfig", "ImageReducer"]


class ImageReducerConfig(pexConfig.Config):
    """Configuration for `ImageReducer`, with LSST's fields and defaults."""

    # The annotations give each field's value type: pex_config fields are descriptors whose
    # untyped constructors leave the value type to be stated.
    reduceOperation: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        doc="Operation to use for reducing subimages into new image.",
        default="average",
        allowed={
            "none": "simply return a list of values and don't re-map results into a new image (noop operation)",
            "copy": "copy subimages back into the same location in a clone of the original image "
            "(pixels not covered stay NaN)",
            "sum": "add subimages into a new image of the original size (pixels not covered stay 0)",
            "average": "same as sum, then divide each pixel by the number of subimages that contributed to it",
            "coaddPsf": "instead of constructing an Exposure, take a list of returned PSFs and use "
            "CoaddPsf to construct a single PSF that covers the entire input exposure",
            "catalog": "not in LSST: each mapper returns Struct(catalog=table) with x, y in parent pixels; "
            "keep each row in the one cell that owns its pixel and return one Table",
        },
    )
    badMaskPlanes: pexConfig.ListField[str] = pexConfig.ListField(
        dtype=str,
        doc="Mask planes to set for invalid pixels",
        default=("INVALID_MAPREDUCE", "BAD", "NO_DATA"),
    )
    # -- not in LSST: weighted stitching for `average` ------------------------------------------
    weighting: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        doc="How overlapping cells are weighted by `average` (see imagemapreduce.weights).",
        default="uniform",
        allowed={
            "uniform": "every valid contribution weighs the same (LSST's average, bit for bit)",
            "linear": "triangular taper over each cell, highest at its centre",
            "cosine": "Hann (sin^2) taper over each cell",
            "gaussian": "Gaussian taper over each cell, sigma = gaussianWidth x the cell size",
            "inverseVariance": "per pixel 1 / variance of each cell's result",
            "custom": "the function named by weightFunction",
        },
    )
    gaussianWidth: pexConfig.Field[float] = pexConfig.Field(
        dtype=float,
        default=0.125,
        check=lambda w: w > 0,
        doc="Sigma of the Gaussian taper as a fraction of the cell size",
    )
    weightFunction: pexConfig.Field[str | None] = pexConfig.Field(
        dtype=str,
        optional=True,
        default=None,
        doc="For weighting='custom': 'module:function', called as function(bbox, image, variance) -> weights",
    )
    weightedVariance: pexConfig.ChoiceField[str] = pexConfig.ChoiceField(
        dtype=str,
        default="correlated",
        doc="Variance of a weighted average: overlapping cells see the same input pixels, so by default their "
        "errors are taken as correlated",
        allowed={
            "correlated": "sum(w v) / sum(w): an upper bound whatever the correlation; exact for fully correlated "
            "results of equal variance; LSST's average for uniform w",
            "independent": "sum(w^2 v) / sum(w)^2: for results with independent noise",
        },
    )

    def validate(self) -> None:
        """Check that weights are used only with `average`, and that a custom weighting has a function."""
        super().validate()
        if self.weighting != "uniform" and self.reduceOperation != "average":
            raise pexConfig.FieldValidationError(
                ImageReducerConfig.weighting,
                self,
                f"weighting={self.weighting!r} applies to reduceOperation='average' only; "
                f"got reduceOperation={self.reduceOperation!r}",
            )
        if self.weighting == "custom" and not self.weightFunction:
            raise pexConfig.FieldValidationError(
                ImageReducerConfig.weightFunction, self, "weighting='custom' needs weightFunction='module:function'"
            )

    def makeWeighting(self) -> Weighting:
        """The `Weighting` these fields describe."""
        function = None
        if self.weighting == "custom":
            assert self.weightFunction is not None  # validate() rejects 'custom' without a weightFunction
            function = _import_function(self.weightFunction)
        return Weighting(self.weighting, self.gaussianWidth, function, self.weightedVariance)


class ImageReducer(Task):
    """Combine the mapper results of every cell, as LSST's ``ImageReducer`` does.

    `run` is the serial, whole-image form of the reduction (LSST's algorithm). `ImageMapReduceTask`
    runs the same arithmetic region by region on Dask, through `prepareOutput` and `finishOutput`.
    A subclass that overrides `run` is honoured: the task then gathers every result and calls it.
    """

    ConfigClass = ImageReducerConfig
    _DefaultName = "ip_diffim_ImageReducer"
    config: ImageReducerConfig

    def run(self, mapperResults: Sequence[Struct], exposure: Exposure, **kwargs: Any) -> Struct:
        """Reduce a list of mapper results, in grid order.

        Returns
        -------
        result : `Struct`
            ``Struct(exposure=...)`` for copy, sum and average; ``Struct(result=...)`` with the
            list of results for none, or with a `CoaddPsf` for coaddPsf; ``Struct(catalog=...)``
            for catalog (see `reduceCatalog`, which needs ``boxes0=``, the cells' boxes).
        """
        operation = self.config.reduceOperation
        if operation == "none":
            return Struct(result=mapperResults)
        if operation == "catalog":
            return Struct(catalog=self.reduceCatalog(mapperResults, kwargs.get("boxes0")))
        if operation == "coaddPsf":
            return Struct(result=self._constructPsf(mapperResults, exposure))
        return Struct(exposure=self._reduceImage(mapperResults, exposure, **kwargs))

    def reduceCatalog(self, mapperResults: Sequence[Struct | None], boxes0: Sequence[Box2I] | None) -> Any:
        """One astropy `~astropy.table.Table` of the cells' catalogs, each row kept by the cell that owns it.

        Parameters
        ----------
        mapperResults : sequence of `Struct` or None
            Each cell's ``Struct(catalog=table)``, in grid order, with ``x`` and ``y`` in parent
            pixel coordinates (xy0 applied, as LSST measurements are); None for a masked failed cell.
        boxes0 : sequence of `Box2I`
            The cells (``task.boxes0``): a row belongs to the cell whose box contains its pixel
            ``(round(x), round(y))``, the nearest centre where boxes overlap (see
            `imagemapreduce.catalog`).

        Returns
        -------
        catalog : `~astropy.table.Table`
            The owned rows in grid order, with a ``cell`` column (the cell's position in
            ``boxes0``) and ``meta`` counts of the rows dropped.
        """
        from .catalog import CELL_NUMBER, mapper_catalog, reduce_catalog
        from .grid import boxes_to_array

        if boxes0 is None:
            raise TypeError(
                "reduceOperation='catalog' needs the cells' boxes to decide which cell owns each row: "
                "run it through ImageMapReduceTask, or call reducer.run(results, exposure, boxes0=task.boxes0)"
            )
        if len(boxes0) != len(mapperResults):
            raise ValueError(f"boxes0 has {len(boxes0)} boxes for {len(mapperResults)} mapper results")
        labels = [f"cell {n} ({box})" for n, box in enumerate(boxes0)]
        tables = [None if r is None else mapper_catalog(r, labels[n]) for n, r in enumerate(mapperResults)]
        return reduce_catalog(tables, boxes_to_array(list(boxes0)), np.arange(len(boxes0)), labels, CELL_NUMBER)

    def _reduceImage(self, mapperResults: Sequence[Struct], exposure: Exposure, **kwargs: Any) -> Exposure:
        """Stitch the results into a new exposure with one whole-image region (LSST's serial loop).

        Mask bits are stitched by plane name: the output has every plane of the input and of the
        results, and each result's bits are renumbered to the output's before they are ORed in.
        """
        unnamed = exposure.mask.getUnnamedBitMask()
        newExp, badBits = self.prepareOutput(exposure, unnamedBits=unnamed)
        items = _sub_exposures(mapperResults)
        planes, _ = region_planes(
            PlaneLayout(newExp.mask.getMaskPlaneDict(), unnamed),
            [(i, item.mask.getMaskPlaneDict()) for i, item in enumerate(items)],
        )
        mi = newExp.maskedImage
        weighting = self.config.makeWeighting()
        operation = self.config.reduceOperation
        # The output's own planes, accumulated into in place.
        output = {
            "bbox": newExp.getBBox(),
            "mask": mi.mask.array,
            "dtype": newExp.dtype,
            "image": mi.image.array,
            "variance": mi.variance.array,
        }
        acc: RegionAccumulator | WeightedRegionAccumulator
        if operation == "average" and not weighting.is_uniform:
            acc = WeightedRegionAccumulator(weighting=weighting, **output)
        else:
            acc = RegionAccumulator(operation=operation, **output)
        components = []
        for item in items:
            weights = None
            if isinstance(acc, WeightedRegionAccumulator):
                weights = weighting.pixel_weights(item.getBBox(), item.image.array, item.variance.array)
            mask = conform_piece_mask(item.mask.array, item.mask.getMaskPlaneDict(), planes)
            acc.add(item.getBBox(), item.image.array, item.variance.array, mask, weights)
            psf_weight = 1.0 if weights is None or weighting.is_window else weighting.psf_weight(weights)
            components.append((item.getPsf(), item.getBBox(), psf_weight))
        stats = acc.finish(badBits)
        newExp.mask.setMaskPlaneDict(planes)
        return self.finishOutput(newExp, stats, components)

    def prepareOutput(self, exposure: Exposure, unnamedBits: int | None = None) -> tuple[Exposure, int]:
        """Clone the input as the output and add the bad-pixel planes; return it and their bit mask.

        Parameters
        ----------
        exposure : `Exposure`
            The input.
        unnamedBits : `int`, optional
            The bits set in the input mask's pixels that no plane names
            (``exposure.mask.getUnnamedBitMask()``, worked out here if not given, which reads a lazy
            mask once). The bad planes are put on other bits, so that an unnamed bit (from a FITS
            file, say) stays unnamed instead of reading as ``INVALID_MAPREDUCE``.

        Returns
        -------
        newExp : `Exposure`
            The output, with the input's pixels (none yet for a lazy input) and mask planes plus the
            bad planes.
        badBits : `int`
            The bit mask of ``config.badMaskPlanes``.
        """
        if any(is_dask_array(p.array) for p in (exposure.image, exposure.mask, exposure.variance)):
            # A lazy input is not read here: the stitcher fills every plane region by region.
            newExp = type(exposure)(
                exposure.getBBox(), psf=exposure.getPsf(), wcs=exposure.getWcs(), metadata=dict(exposure.getMetadata())
            )
        else:
            newExp = exposure.clone()
        if unnamedBits is None:
            unnamedBits = exposure.mask.getUnnamedBitMask()
        layout = PlaneLayout(exposure.mask.getMaskPlaneDict(), unnamedBits)
        mask = newExp.mask
        mask.setMaskPlaneDict(layout.with_planes(self.config.badMaskPlanes, " (config.badMaskPlanes)"))
        return newExp, mask.getPlaneBitMask(list(self.config.badMaskPlanes))

    def finishOutput(
        self, newExp: Exposure, stats: RegionStats, components: Sequence[tuple[Any, Any, float]]
    ) -> Exposure:
        """Log the overlap statistics and attach the CoaddPsf of the cells (sum and average).

        The CoaddPsf's weights follow the pixel weights: a taper window weighs each cell's PSF by
        the window at the position asked for; other weightings by the cell's mean pixel weight.
        """
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
        usable = [c for c in components if c[0] is not None and c[2] > 0]
        if operation in ("sum", "average") and usable:
            weighting = self.config.makeWeighting() if operation == "average" else Weighting()
            if weighting.is_window:
                newExp.setPsf(WindowedCoaddPsf(usable, weighting))
            else:
                newExp.setPsf(CoaddPsf(usable))
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
            raise TypeError(f'Expecting an Exposure type, got {type(item)}. Consider using `reduceOperation="none"`.')
        items.append(item)
    return items


def _import_function(path: str) -> Any:
    """Import ``'package.module:function'``; a clear error when it cannot be found."""
    import importlib

    module_name, _, name = path.partition(":")
    if not module_name or not name:
        raise ValueError(f"weightFunction must look like 'package.module:function', got {path!r}")
    try:
        return getattr(importlib.import_module(module_name), name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"cannot import weightFunction {path!r}: {exc}") from exc
