"""The reference grid for the grid tests: LSST's serial ``_generateGrid`` loop, and what the tests share.

The reference is a transcription of LSST's serial ``ImageMapReduceTask._generateGrid`` loop
(``lsst.ip.diffim.imageMapReduce``), moving one `Box2I` at a time; the vectorised grid must match
it box for box. It shares no code with the package's grid module.
"""

from __future__ import annotations

import numpy as np
from hypothesis import settings
from hypothesis import strategies as st

from imagemapreduce import ExposureF, ImageMapReduceConfig
from imagemapreduce.builtin_mappers import IdentityMapper
from imagemapreduce.geom import Box2I, Extent2I, Point2D, Point2I

FWHM_FACTOR = 2.0 * np.sqrt(2.0 * np.log(2.0))
PROPERTY_SETTINGS = settings(max_examples=100, deadline=None, database=None)


# -- the reference: LSST's serial loop ---------------------------------------------------------------
def lsst_fwhm(psf) -> float:
    """LSST: determinant radius of the PSF shape at its average position x 2 sqrt(2 ln 2)."""
    return psf.computeShape(psf.getAveragePosition()).getDeterminantRadius() * 2.0 * np.sqrt(2.0 * np.log(2.0))


def reference_grid(
    bbox: Box2I,
    cellSizeX: float,
    cellSizeY: float,
    gridStepX: float,
    gridStepY: float,
    borderSizeX: float,
    borderSizeY: float,
    adjustGridOption: str = "spacing",
    psfFwhm: float | None = None,
    cellCentroidsX: list[float] | None = None,
    cellCentroidsY: list[float] | None = None,
    forceEvenSized: bool = False,
) -> tuple[list[Box2I], list[Box2I]]:
    """LSST's ``_generateGrid``, transcribed; ``psfFwhm`` given means ``scaleByFwhm=True``."""
    if cellCentroidsX is None or len(cellCentroidsX) <= 0:

        def rescaleValue(val):
            if psfFwhm is not None:
                return np.rint(val * psfFwhm).astype(int)
            return np.rint(val).astype(int)

        cellSizeX = rescaleValue(cellSizeX)
        cellSizeY = rescaleValue(cellSizeY)
        gridStepX = rescaleValue(gridStepX)
        gridStepY = rescaleValue(gridStepY)
        borderSizeX = rescaleValue(borderSizeX)
        borderSizeY = rescaleValue(borderSizeY)

        if adjustGridOption == "spacing":
            nGridX = bbox.getWidth() // cellSizeX + 1
            nGridY = bbox.getHeight() // cellSizeY + 1
            xLinSpace = np.linspace(cellSizeX // 2, bbox.getWidth() - cellSizeX // 2, nGridX)
            yLinSpace = np.linspace(cellSizeY // 2, bbox.getHeight() - cellSizeY // 2, nGridY)
        elif adjustGridOption == "size":
            cellSizeX = gridStepX
            cellSizeY = gridStepY
            xLinSpace = np.arange(cellSizeX // 2, bbox.getWidth() + cellSizeX // 2, cellSizeX)
            yLinSpace = np.arange(cellSizeY // 2, bbox.getHeight() + cellSizeY // 2, cellSizeY)
            cellSizeX += 1  # add 1 to make sure there are no gaps
            cellSizeY += 1
        else:
            xLinSpace = np.arange(cellSizeX // 2, bbox.getWidth() + cellSizeX // 2, gridStepX)
            yLinSpace = np.arange(cellSizeY // 2, bbox.getHeight() + cellSizeY // 2, gridStepY)

        cellCentroids = [(x, y) for x in xLinSpace for y in yLinSpace]
    else:
        cellCentroids = [(cellCentroidsX[i], cellCentroidsY[i]) for i in range(len(cellCentroidsX))]
        cellSizeX, cellSizeY = int(cellSizeX), int(cellSizeY)
        borderSizeX, borderSizeY = int(borderSizeX), int(borderSizeY)

    # first "main" box at 0,0
    bbox0 = Box2I(Point2I(bbox.getBegin()), Extent2I(int(cellSizeX), int(cellSizeY)))
    # first expanded box
    bbox1 = Box2I(bbox0)
    bbox1.grow(Extent2I(int(borderSizeX), int(borderSizeY)))

    boxes0, boxes1 = [], []

    def _makeBoxEvenSized(bb):
        if bb.getWidth() % 2 == 1:  # grow to the right
            bb.include(Point2I(bb.getMaxX() + 1, bb.getMaxY()))
            bb.clip(bbox)
            if bb.getWidth() % 2 == 1:  # clipped at right -- so grow to the left
                bb.include(Point2I(bb.getMinX() - 1, bb.getMaxY()))
                bb.clip(bbox)
        if bb.getHeight() % 2 == 1:  # grow upwards
            bb.include(Point2I(bb.getMaxX(), bb.getMaxY() + 1))
            bb.clip(bbox)
            if bb.getHeight() % 2 == 1:  # clipped upwards -- so grow down
                bb.include(Point2I(bb.getMaxX(), bb.getMinY() - 1))
                bb.clip(bbox)
        if bb.getWidth() % 2 == 1 or bb.getHeight() % 2 == 1:
            raise RuntimeError("Cannot make bounding box even-sized. Probably too big.")
        return bb

    for x, y in cellCentroids:
        centroid = Point2D(x, y)
        bb0 = Box2I(bbox0)
        xoff = int(np.floor(centroid.getX())) - bb0.getWidth() // 2
        yoff = int(np.floor(centroid.getY())) - bb0.getHeight() // 2
        bb0.shift(Extent2I(xoff, yoff))
        bb0.clip(bbox)
        if forceEvenSized:
            bb0 = _makeBoxEvenSized(bb0)
        bb1 = Box2I(bbox1)
        bb1.shift(Extent2I(xoff, yoff))
        bb1.clip(bbox)
        if forceEvenSized:
            bb1 = _makeBoxEvenSized(bb1)
        if bb0.getArea() > 1 and bb1.getArea() > 1:
            boxes0.append(bb0)
            boxes1.append(bb1)
    return boxes0, boxes1


def reference_for_task(exposure, config: ImageMapReduceConfig, forceEvenSized: bool = False):
    """Return the reference grid for a task's config and an exposure."""
    given = config.cellCentroidsX is not None and len(config.cellCentroidsX) > 0
    fwhm = lsst_fwhm(exposure.getPsf()) if (config.scaleByFwhm and not given) else None
    return reference_grid(
        exposure.getBBox(),
        config.cellSizeX,
        config.cellSizeY,
        config.gridStepX,
        config.gridStepY,
        config.borderSizeX,
        config.borderSizeY,
        config.adjustGridOption,
        psfFwhm=fwhm,
        cellCentroidsX=config.cellCentroidsX,
        cellCentroidsY=config.cellCentroidsY,
        forceEvenSized=forceEvenSized,
    )


def outcome(fn):
    """``("ok", value)`` or ``("raises", exception type)``: compare paths that may both fail."""
    try:
        return ("ok", fn())
    except (RuntimeError, ValueError) as exc:
        return ("raises", type(exc))


def make_config(**fields) -> ImageMapReduceConfig:
    config = ImageMapReduceConfig()
    config.mapper.retarget(IdentityMapper)
    config.scheduler = "synchronous"
    for name, value in fields.items():
        setattr(config, name, value)
    return config


def make_exposure(width: int, height: int, xy0=(0, 0), psf=None) -> ExposureF:
    exposure = ExposureF(Box2I(Point2I(*xy0), Extent2I(width, height)))
    if psf is not None:
        exposure.setPsf(psf)
    return exposure


def as_tuples(boxes):
    return [(b.getMinX(), b.getMinY(), b.getMaxX(), b.getMaxY()) for b in boxes]


def coverage(bbox: Box2I, boxes: np.ndarray) -> np.ndarray:
    """How many boxes cover each pixel (rows = y), by a 2-d difference array and cumulative sums."""
    diff = np.zeros((bbox.getHeight() + 1, bbox.getWidth() + 1), dtype=np.int64)
    x0 = boxes[:, 0] - bbox.getMinX()
    y0 = boxes[:, 1] - bbox.getMinY()
    x1 = boxes[:, 2] - bbox.getMinX() + 1
    y1 = boxes[:, 3] - bbox.getMinY() + 1
    np.add.at(diff, (y0, x0), 1)
    np.add.at(diff, (y0, x1), -1)
    np.add.at(diff, (y1, x0), -1)
    np.add.at(diff, (y1, x1), 1)
    return diff.cumsum(axis=0).cumsum(axis=1)[:-1, :-1]


# -- hypothesis strategies ---------------------------------------------------------------------------
@st.composite
def grid_params(draw, adjusts=("spacing", "size", "none")):
    width = draw(st.integers(2, 300))
    height = draw(st.integers(2, 300))
    xy0 = (draw(st.integers(-500, 500)), draw(st.integers(-500, 500)))
    # Keep at most ~17 cells per axis so the serial reference stays quick.
    cell = (draw(st.integers(max(2, width // 16), 80)), draw(st.integers(max(2, height // 16), 80)))
    step = (draw(st.integers(max(1, width // 16), 80)), draw(st.integers(max(1, height // 16), 80)))
    border = (draw(st.integers(0, 20)), draw(st.integers(0, 20)))
    adjust = draw(st.sampled_from(adjusts))
    return Box2I(Point2I(*xy0), Extent2I(width, height)), cell, step, border, adjust
