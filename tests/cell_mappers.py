"""Mappers used by the tests (a module of its own so worker processes can import them)."""

from __future__ import annotations

import numpy as np

import imagemapreduce as imr
from imagemapreduce.pipe_base import Struct


class CentreValueMapper(imr.ImageMapper):
    """Add a value that depends on the cell's centre, poke NaN holes and set a mask bit.

    Overlapping cells disagree, some pixels are invalid in some cells only, and masks differ:
    everything the reducer has to get right.
    """

    _DefaultName = "test_CentreValueMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = subExposure.clone()
        centre = subExposure.getBBox().getCenter()
        out.image.array += np.float32(0.01 * centre.x + 0.1 * centre.y + kwargs.get("offset", 0.0))
        out.variance.array *= np.float32(1.0 + 0.001 * centre.x)
        h, w = out.image.array.shape
        # NaN holes on a diagonal that moves with the cell, so neighbours cover each other's holes.
        ys = np.arange(h)
        xs = (ys * 3 + int(centre.x)) % w
        out.image.array[ys, xs] = np.nan
        if (int(centre.x) + int(centre.y)) % 3 == 0:
            out.variance.array[0, :] = np.nan
        out.mask.array[:, 0] |= out.mask.getPlaneBitMask("CR")
        return Struct(subExposure=out)


class ExpandedResultMapper(imr.ImageMapper):
    """Return the whole expanded cell, scaled: results overlap far more than the cells do."""

    _DefaultName = "test_ExpandedResultMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = expandedSubExposure.clone()
        out.maskedImage *= 2.0
        return Struct(subExposure=out)


class EchoMapper(imr.ImageMapper):
    """Return what it was given, for reduceOperation='none'."""

    _DefaultName = "test_EchoMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        return Struct(
            bbox=subExposure.getBBox(),
            expandedBBox=expandedSubExposure.getBBox(),
            fullBBox=fullBBox,
            kwargs=dict(kwargs),
            sum=float(np.sum(subExposure.image.array)),
            writeable=bool(subExposure.image.array.flags.writeable),
        )


class InPlaceMapper(imr.ImageMapper):
    """Write into the sub-exposure it was given (only legal with doClone=True)."""

    _DefaultName = "test_InPlaceMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        subExposure.image.array += 1.0
        return Struct(subExposure=subExposure)


class FailingMapper(imr.ImageMapper):
    """Raise on the cell whose box contains a given pixel."""

    _DefaultName = "test_FailingMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        if subExposure.getBBox().contains(imr.Point2I(*kwargs.get("failAt", (0, 0)))):
            raise ZeroDivisionError("boom in this cell")
        return Struct(subExposure=subExposure)


class NotAnExposureMapper(imr.ImageMapper):
    """Return a number, which only reduceOperation='none' accepts."""

    _DefaultName = "test_NotAnExposureMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        return Struct(subExposure=float(subExposure.image.array.sum()))


class PsfPerCellMapper(imr.ImageMapper):
    """Return a Gaussian PSF whose width depends on the cell, for reduceOperation='coaddPsf'."""

    _DefaultName = "test_PsfPerCellMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        centre = subExposure.getBBox().getCenter()
        sigma = 1.5 + centre.x / max(fullBBox.getWidth(), 1)
        return Struct(psf=imr.GaussianPsf(21, 21, sigma), bbox=subExposure.getBBox())


class SlowAddMapper(imr.ImageMapper):
    """Add 1 after sleeping (``sleep`` seconds from the run's keywords): long enough to interrupt."""

    _DefaultName = "test_SlowAddMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        import time

        time.sleep(kwargs.get("sleep", 0.0))
        out = subExposure.clone()
        out.image.array += np.float32(1.0)
        return Struct(subExposure=out)


class TemplateDifferenceMapper(imr.ImageMapper):
    """Image differencing as LSST writes it: address the template by the cell's bbox."""

    _DefaultName = "test_TemplateDifferenceMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, template=None, **kwargs):
        out = subExposure.clone()
        templateCell = template.Factory(template, subExposure.getBBox())
        out.image.array -= templateCell.image.array
        out.variance.array += templateCell.variance.array
        return Struct(subExposure=out, templateBBox=template.getBBox())


class FlakyMapper(imr.ImageMapper):
    """Fail the first ``failures`` calls on each cell (counted in a folder of marker files)."""

    _DefaultName = "test_FlakyMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, markers=None, failures=1, **kwargs):
        import os

        box = subExposure.getBBox()
        path = os.path.join(markers, f"{box.getMinX()}_{box.getMinY()}")
        calls = len(os.listdir(path)) if os.path.isdir(path) else 0
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, str(calls)), "w").close()
        if calls < failures:
            raise OSError(f"flaky failure {calls}")
        return Struct(subExposure=subExposure)


class HugeValueMapper(imr.ImageMapper):
    """Fill each cell with +-3e38 or an infinity: finite pieces whose sums overflow, and inf - inf.

    Every piece is valid by LSST's rule (``image * variance`` is not NaN), but the stitched sums
    are not finite, so the stitcher's optimistic adds must fall back to the careful path.
    """

    _DefaultName = "test_HugeValueMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = subExposure.clone()
        corner = subExposure.getBBox().getMin()
        value = (3e38, -3e38, np.inf, -np.inf)[(corner.x // 13 + 2 * (corner.y // 11)) % 4]
        out.image.array[...] = np.float32(value)
        return Struct(subExposure=out)


class InterruptibleMapper(imr.ImageMapper):
    """Give each cell its own Gaussian PSF and add 1; raise once ``LIMIT["calls"]`` cells have run.

    ``LIMIT`` is module state, so this stands for a crash only on the in-process schedulers; the
    tests set and clear it around a run. Cells whose box contains ``failAt`` always fail (to be masked).
    """

    _DefaultName = "test_InterruptibleMapper"
    LIMIT: dict = {"calls": None, "done": 0}
    CALLS: list = []

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        limit = InterruptibleMapper.LIMIT
        if limit["calls"] is not None and limit["done"] >= limit["calls"]:
            raise KeyboardInterrupt("simulated crash")
        limit["done"] += 1
        InterruptibleMapper.CALLS.append(subExposure.getBBox())
        if kwargs.get("sleep"):
            import time

            time.sleep(kwargs["sleep"])
        if subExposure.getBBox().contains(imr.Point2I(*kwargs.get("failAt", (-(10**6), -(10**6))))):
            raise ZeroDivisionError("boom in this cell")
        out = subExposure.clone()
        out.image.array += np.float32(1.0)
        centre = subExposure.getBBox().getCenter()
        out.setPsf(imr.GaussianPsf(15, 15, 1.5 + 0.01 * centre.x + 0.003 * centre.y))
        return Struct(subExposure=out)


#: Sizes of the ``runCells`` calls of the mappers below, in this process (threads, synchronous).
RUN_CELLS_CALLS: list[int] = []


class TogetherMapper(CentreValueMapper):
    """`CentreValueMapper` with its own ``runCells``, which logs each call's number of cells."""

    _DefaultName = "test_TogetherMapper"

    def runCells(self, cells, fullBBox, **kwargs):
        RUN_CELLS_CALLS.append(len(cells))
        return [self.run(sub, expanded, fullBBox, **kwargs) for sub, expanded in cells]


class FailingTogetherMapper(FailingMapper):
    """`FailingMapper` with a ``runCells`` that fails as a whole when one of its cells would."""

    _DefaultName = "test_FailingTogetherMapper"

    def runCells(self, cells, fullBBox, **kwargs):
        RUN_CELLS_CALLS.append(len(cells))
        return [self.run(sub, expanded, fullBBox, **kwargs) for sub, expanded in cells]


class ShortTogetherMapper(CentreValueMapper):
    """A ``runCells`` that drops its last result: the engine must notice and run each cell alone."""

    _DefaultName = "test_ShortTogetherMapper"

    def runCells(self, cells, fullBBox, **kwargs):
        RUN_CELLS_CALLS.append(len(cells))
        return [self.run(sub, expanded, fullBBox, **kwargs) for sub, expanded in cells][:-1]
