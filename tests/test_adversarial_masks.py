"""Masks and validity are never silently dropped or relabelled (issue 11, section 3).

Mask planes are stitched by name on every scheduler; an unnamed input bit stays unnamed; a numpy
masked array's mask is honoured; a result that cannot be stitched is a clear error naming the
cell; and a mapper writing into its input fails the same way everywhere.

The mappers and functions are defined here, at module level, so that worker processes can import
them.
"""

# ruff: noqa: D101, D102, D103

from __future__ import annotations

from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from conftest import make_exposure

import imagemapreduce as imr
from imagemapreduce import map_reduce
from imagemapreduce.engine import CellFailure
from imagemapreduce.engine.graph import StitchOutcome, StitchReport
from imagemapreduce.image import Exposure, Mask
from imagemapreduce.image._mask import lowest_free_bit, pixel_bits, remap_mask_bits
from imagemapreduce.io.fits import read_exposure, write_exposure
from imagemapreduce.pipe_base import Struct
from imagemapreduce.reducer import ImageReducer
from imagemapreduce.stitch import RegionStats
from imagemapreduce.stitch_planes import NewPlane, PlaneLayout, merge_new_planes, region_planes

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "afw-fits"
GRID = dict(scaleByFwhm=False, cellSizeX=10, cellSizeY=10, gridStepX=7, gridStepY=7, borderSizeX=3,
            borderSizeY=3, adjustGridOption="spacing")  # fmt: skip
SCHEDULERS = ["synchronous", "threads", "processes", "distributed"]


# -- mappers ----------------------------------------------------------------------------------------
class PlainMapper(imr.ImageMapper):
    """A private copy of the cell, image + 1: the reference for the plane-adding mappers."""

    _DefaultName = "test_PlainMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = subExposure.clone()
        out.image.array += np.float32(1.0)
        return Struct(subExposure=out)


class AddPlaneMapper(PlainMapper):
    """As `PlainMapper`, and a plane of its own set on the even parent rows."""

    _DefaultName = "test_AddPlaneMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = super().run(subExposure, expandedSubExposure, fullBBox).subExposure
        bit = out.mask.addMaskPlane("MYPLANE")
        out.mask.array[_even_rows(out)] |= np.int32(1 << bit)
        return Struct(subExposure=out)


class LeftRightMapper(PlainMapper):
    """Cells left of x = 20 add plane LEFT, the others RIGHT then LEFT, each set on the whole cell."""

    _DefaultName = "test_LeftRightMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = super().run(subExposure, expandedSubExposure, fullBBox).subExposure
        left = subExposure.getBBox().getCenter().x < 20
        names = ("LEFT",) if left else ("RIGHT", "LEFT")
        for name in names:
            out.mask.addMaskPlane(name)
        out.mask.array[...] |= np.int32(out.mask.getPlaneBitMask(names[0]))
        return Struct(subExposure=out)


class RenumberedMapper(PlainMapper):
    """A fresh result whose mask numbers the planes its own way, with CR set on the first row."""

    _DefaultName = "test_RenumberedMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = super().run(subExposure, expandedSubExposure, fullBBox).subExposure
        planes = {"CR": 0, "SAT": 5, "BAD": 7}
        mask = np.zeros_like(out.mask.array)
        mask[0, :] = 1 << planes["CR"]
        mask |= np.where(subExposure.mask.array & subExposure.mask.getPlaneBitMask("SAT"), 1 << planes["SAT"], 0)
        return Struct(subExposure=Exposure.from_arrays(out.image.array, mask, out.variance.array,
                                                       xy0=out.getXY0(), planeDict=planes))  # fmt: skip


class ManyPlanesMapper(PlainMapper):
    """Adds a different plane in each cell: more than the 32 bits of a mask can hold."""

    _DefaultName = "test_ManyPlanesMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        out = super().run(subExposure, expandedSubExposure, fullBBox).subExposure
        box = subExposure.getBBox()
        planes = {"BAD": 0, **{f"CELL_{box.getMinX()}_{box.getMinY()}_{k}": 1 + k for k in range(4)}}
        return Struct(subExposure=Exposure.from_arrays(out.image.array, None, out.variance.array,
                                                       xy0=out.getXY0(), planeDict=planes))  # fmt: skip


class PlaneOnInputMapper(PlainMapper):
    """Names a plane on its (read-only) input cut, then returns a copy: the caller's input must not change."""

    _DefaultName = "test_PlaneOnInputMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        subExposure.mask.addMaskPlane(f"SEEN_{subExposure.getBBox().getMinX()}")
        return super().run(subExposure, expandedSubExposure, fullBBox)


class BadPixelsMapper(imr.ImageMapper):
    """Returns a result whose ``plane`` holds pixels of ``dtype``."""

    _DefaultName = "test_BadPixelsMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, dtype=None, plane="image", **kwargs):
        out = subExposure.clone()
        shape = out.image.array.shape
        pixels = np.full(shape, None, dtype=object) if dtype == "none" else np.zeros(shape, dtype=dtype)
        getattr(out, plane).array = pixels
        return Struct(subExposure=out)


class WritingMapper(imr.ImageMapper):
    """Zeroes its input's image and returns it."""

    _DefaultName = "test_WritingMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, **kwargs):
        subExposure.image.array[...] = 0
        return Struct(subExposure=subExposure)


class ProbeWritesMapper(imr.ImageMapper):
    """Tries to write into each plane it is given; returns which it could write (for reduceOperation='none')."""

    _DefaultName = "test_ProbeWritesMapper"

    def run(self, subExposure, expandedSubExposure, fullBBox, template=None, **kwargs):
        targets = {"image": subExposure.image, "mask": subExposure.mask, "variance": subExposure.variance,
                   "expanded": expandedSubExposure.image, "companion": template.image}  # fmt: skip
        writeable = {}
        for name, plane in targets.items():
            try:
                plane.array[0, 0] = plane.array[0, 0]
                writeable[name] = True
            except ValueError:  # "assignment destination is read-only"
                writeable[name] = False
        return Struct(writeable=writeable)


def _even_rows(image) -> np.ndarray:
    return (np.arange(image.getHeight()) + image.getY0()) % 2 == 0


# -- functions for map_reduce ------------------------------------------------------------------------
def twice(cell):
    return cell * 2.0


def record_nan(cell):
    """The cell's NaN pixels as 1, others 0 (to see what func received)."""
    return np.isnan(cell).astype(np.float64)


def mask_above_five(cell):
    return np.ma.masked_array(cell * 2.0, mask=cell > 5)


def masked_int_result(cell):
    return np.ma.masked_array(cell.astype(np.int64), mask=cell > 5)


def first_companion_nan(cell, weight):
    return np.where(np.isnan(weight), -1.0, cell)


def write_into_cell(cell):
    cell[0, 0] = 1.0
    return cell


def return_none_objects(cell):
    return np.full(cell.shape, None, dtype=object)


def return_strings(cell):
    return np.full(cell.shape, "1.5")


def return_complex(cell):
    return cell + 1j


def return_datetimes(cell):
    return np.full(cell.shape, np.datetime64("2024-01-01"))


def return_none(cell):
    return None


# -- helpers ----------------------------------------------------------------------------------------
def _task(mapper, operation="copy", scheduler="synchronous", region=512, client=None):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    config.reducer.reduceOperation = operation
    config.stitchRegionSize = region
    config.scheduler = None if client is not None else scheduler
    config.numWorkers = 2
    for name, value in GRID.items():
        setattr(config, name, value)
    return imr.ImageMapReduceTask(config=config, scheduler=client)


@pytest.fixture
def scheduled(request):
    """(scheduler name, client or None) for the scheduler named by the test's parameter."""

    def choose(name):
        return (None, request.getfixturevalue("local_cluster")) if name == "distributed" else (name, None)

    return choose


@pytest.fixture(scope="module")
def small():
    return make_exposure(40, 30, xy0=(3, -4), seed=3, psf=False)


@pytest.fixture(scope="module")
def plain(small):
    """`PlainMapper`'s output for each operation (on the synchronous scheduler: any gives the same bits)."""
    return {operation: _run(PlainMapper, small, operation=operation)[1] for operation in ("copy", "average")}


def _run(mapper, exposure, scheduler="synchronous", client=None, operation="copy", region=512, **kwargs):
    task = _task(mapper, operation, scheduler, region, client)
    return task, task.run(exposure, **kwargs).exposure


# == 1. planes a mapper adds are stitched by name ====================================================
@pytest.mark.parametrize(
    ("name", "operation"),
    [*((name, "copy") for name in SCHEDULERS), ("synchronous", "average"), ("threads", "average"),
     ("distributed", "average")],
)  # fmt: skip
def test_added_plane_keeps_its_name_on_every_scheduler(small, plain, scheduled, name, operation):
    scheduler, client = scheduled(name)
    plain = plain[operation]
    _, out = _run(AddPlaneMapper, small, scheduler, client, operation, region=16)
    planes = out.mask.getMaskPlaneDict()
    assert planes == {**plain.mask.getMaskPlaneDict(), "MYPLANE": planes["MYPLANE"]}
    assert planes["MYPLANE"] not in plain.mask.getMaskPlaneDict().values()
    np.testing.assert_array_equal(out.image.array, plain.image.array)
    np.testing.assert_array_equal(out.variance.array, plain.variance.array)
    expected = plain.mask.array.copy()
    expected[_even_rows(out)] |= 1 << planes["MYPLANE"]
    np.testing.assert_array_equal(out.mask.array, expected)  # no pixel flagged INVALID_MAPREDUCE
    assert not (out.mask.array & out.mask.getPlaneBitMask("INVALID_MAPREDUCE")).any()


@pytest.mark.parametrize("name", ["threads", "distributed"])
def test_planes_added_by_some_cells_only_are_numbered_alike_in_every_region(small, plain, scheduled, name):
    scheduler, client = scheduled(name)
    task, out = _run(LeftRightMapper, small, scheduler, client, region=8)
    plain = plain["copy"]
    planes = out.mask.getMaskPlaneDict()
    assert {"LEFT", "RIGHT"} <= set(planes) and planes["LEFT"] != planes["RIGHT"]
    assert planes["LEFT"] not in plain.mask.getMaskPlaneDict().values()
    origin = small.getXY0()
    for name_, centre_left in (("LEFT", True), ("RIGHT", False)):
        want = np.zeros(small.image.array.shape, dtype=bool)
        for box in task.boxes0:
            if (box.getCenter().x < 20) == centre_left:
                want[box.slices(origin)] = True
        np.testing.assert_array_equal((out.mask.array & out.mask.getPlaneBitMask(name_)) != 0, want)
    others = ~out.mask.getPlaneBitMask(["LEFT", "RIGHT"])
    np.testing.assert_array_equal(out.mask.array & others, plain.mask.array)


def test_result_with_its_own_numbering_is_renumbered_by_name(small):
    _, out = _run(RenumberedMapper, small)
    cr, sat = out.mask.getPlaneBitMask("CR"), out.mask.getPlaneBitMask("SAT")
    assert out.mask.getMaskPlaneDict()["CR"] == 3  # the output keeps the input's numbering
    first_rows = np.zeros(small.image.array.shape, dtype=bool)
    task = _task(RenumberedMapper)
    task.run(small)
    for box in task.boxes0:
        first_rows[box.getMinY() - small.getY0(), box.slices(small.getXY0())[1]] = True
    np.testing.assert_array_equal((out.mask.array & cr) != 0, first_rows)
    np.testing.assert_array_equal(out.mask.array & sat, small.mask.array & sat)
    assert not (out.mask.array & ~(cr | sat)).any()


def test_serial_reducer_stitches_planes_by_name(small):
    task = _task(AddPlaneMapper)
    results = task._runMapper(small)
    serial = ImageReducer(config=task.reducer.config).run(results, small).exposure
    parallel = task.run(small).exposure
    assert serial.mask.getMaskPlaneDict() == parallel.mask.getMaskPlaneDict()
    assert not (serial.mask.array & serial.mask.getPlaneBitMask("INVALID_MAPREDUCE")).any()
    assert (serial.mask.array[_even_rows(serial)] & serial.mask.getPlaneBitMask("MYPLANE")).all()
    np.testing.assert_array_equal(serial.mask.array, parallel.mask.array)
    np.testing.assert_array_equal(serial.image.array, parallel.image.array)


def test_lazy_input_stitches_planes_by_name(small):
    lazy = Exposure.from_arrays(
        *(da.from_array(p.array, chunks=16) for p in (small.image, small.mask, small.variance)),
        xy0=small.getXY0(), planeDict=small.mask.getMaskPlaneDict(),
    )  # fmt: skip
    _, eager = _run(AddPlaneMapper, small, "threads")
    _, out = _run(AddPlaneMapper, lazy, "threads", region=16)
    assert out.mask.getMaskPlaneDict() == eager.mask.getMaskPlaneDict()
    np.testing.assert_array_equal(out.mask.array, eager.mask.array)
    assert not (out.mask.array & out.mask.getPlaneBitMask("INVALID_MAPREDUCE")).any()
    assert (out.mask.array[_even_rows(out)] & out.mask.getPlaneBitMask("MYPLANE")).all()


def test_too_many_planes_is_a_clear_error(small):
    with pytest.raises(RuntimeError, match=r"cannot add mask plane 'CELL_.*set by the mapper in cell \d+.*32 bits"):
        _run(ManyPlanesMapper, small)


def test_a_plane_named_on_the_input_cut_leaves_the_input_alone(small):
    before = small.mask.getMaskPlaneDict()
    _, out = _run(PlaneOnInputMapper, small, "threads")
    assert small.mask.getMaskPlaneDict() == before  # each cell named the plane on its own copy of the planes
    planes = out.mask.getMaskPlaneDict()
    seen = sorted(name for name in planes if name.startswith("SEEN_"))
    assert seen == ["SEEN_10", "SEEN_18", "SEEN_25", "SEEN_3", "SEEN_33"]  # the results' planes, by name
    assert len(set(planes.values())) == len(planes)


def test_report_merges_region_numberings_and_moves_the_odd_region():
    layout = PlaneLayout({"BAD": 0, "INVALID_MAPREDUCE": 1}, reserved=1 << 2)
    # Region A saw cell 0's plane A then cell 4's B; region B saw only cell 4's B, on the first free bit.
    planes_a, new_a = region_planes(layout, [(0, {"BAD": 0, "A": 5}), (4, {"B": 1})])
    planes_b, new_b = region_planes(layout, [(4, {"B": 1})])
    assert planes_a == {"BAD": 0, "INVALID_MAPREDUCE": 1, "A": 3, "B": 4} and planes_b["B"] == 3
    report = StitchReport()
    box_a, box_b = imr.Box2I(imr.Point2I(0, 0), imr.Point2I(3, 3)), imr.Box2I(imr.Point2I(4, 0), imr.Point2I(7, 3))
    report.add(StitchOutcome(box_a, RegionStats(), new_planes=new_a))
    report.add(StitchOutcome(box_b, RegionStats(), new_planes=new_b))
    planes, moves = report.mask_planes(layout)
    assert planes == planes_a == merge_new_planes(layout, [new_b, new_a])
    assert moves == [(box_b, {3: 4})]
    assert new_b == {"B": NewPlane((4, 1), 3)}


# -- the Mask API the stitcher uses ------------------------------------------------------------------
def test_set_mask_plane_dict_is_shared_with_views_and_checked():
    mask = Mask(8, 6)
    view = mask[imr.Box2I(imr.Point2I(1, 1), imr.Point2I(3, 3))]
    mask.setMaskPlaneDict({"A": 4, "B": 31})
    assert view.getMaskPlaneDict() == {"A": 4, "B": 31}
    with pytest.raises(ValueError, match="two planes the same bit"):
        mask.setMaskPlaneDict({"A": 1, "B": 1})
    with pytest.raises(ValueError, match=r"bits must lie in 0\.\.31"):
        mask.setMaskPlaneDict({"A": 32})


def test_conform_mask_planes_moves_bits_by_name_and_keeps_unnamed_ones():
    mask = Mask(np.array([[1 << 3 | 1 << 20, 1 << 5, 1 << 0]], dtype=np.int32), planeDict={"CR": 5, "SAT": 0})
    mask.conformMaskPlanes({"CR": 3, "SAT": 0, "NEW": 9})
    # CR 3 -> 5; SAT keeps bit 0; unnamed bit 20 kept; bit 5 was unnamed before and names CR now: cleared.
    assert mask.getMaskPlaneDict()["NEW"] not in (0, 5)
    np.testing.assert_array_equal(mask.array, [[1 << 5 | 1 << 20, 0, 1 << 0]])


def test_unnamed_bits_include_bit_31_and_lazy_masks():
    array = np.array([[0, 1 << 2], [np.int32(-(2**31)), 1]], dtype=np.int32)
    mask = Mask(array, planeDict={"BAD": 0})
    assert mask.getUnnamedBitMask() == (1 << 2) | (1 << 31)
    assert Mask(da.from_array(array, chunks=1), planeDict={"BAD": 0}).getUnnamedBitMask() == (1 << 2) | (1 << 31)
    assert pixel_bits(remap_mask_bits(array, {31: 30, 2: 31})) == (1 << 0) | (1 << 30) | (1 << 31)


# == 2. unnamed bits of an input stay unnamed ========================================================
def _write_afw_like(path, image, mask, variance, planes):
    """An afw-layout file written by astropy alone: IMAGE, MASK (with MP_ cards) and VARIANCE HDUs."""
    header = fits.Header([(f"HIERARCH MP_{name}" if len(name) > 5 else f"MP_{name}", bit)
                          for name, bit in planes.items()])  # fmt: skip
    hdus = [fits.PrimaryHDU()]
    for name, data, extra in (("IMAGE", image, None), ("MASK", mask, header), ("VARIANCE", variance, None)):
        hdu = fits.ImageHDU(data=data, header=extra)
        hdu.header["EXTNAME"] = name
        hdus.append(hdu)
    fits.HDUList(hdus).writeto(path)


@pytest.fixture
def unnamed_bit_file(tmp_path):
    """A file whose pixels set bit 2 on every fifth pixel, though its MP_ cards name only bits 0, 1 and 8."""
    rng = np.random.default_rng(5)
    image = rng.normal(size=(30, 40)).astype(np.float32)
    mask = np.where(np.arange(1200).reshape(30, 40) % 5 == 0, 1 << 2, 0).astype(np.int32)
    mask[3, :] |= 1 << 1
    path = tmp_path / "unnamed.fits"
    _write_afw_like(path, image, mask, np.ones_like(image), {"BAD": 0, "SAT": 1, "NO_DATA": 8})
    return path, mask


def test_unnamed_fits_bit_is_read_unnamed(unnamed_bit_file):
    path, mask = unnamed_bit_file
    exposure = read_exposure(path)
    assert exposure.mask.getMaskPlaneDict() == {"BAD": 0, "SAT": 1, "NO_DATA": 8}
    assert exposure.mask.getUnnamedBitMask() == 1 << 2
    np.testing.assert_array_equal(exposure.mask.array, mask)


@pytest.mark.parametrize("name", ["synchronous", "distributed"])
def test_unnamed_fits_bit_never_becomes_invalid_mapreduce(unnamed_bit_file, scheduled, tmp_path, name):
    path, mask = unnamed_bit_file
    exposure = read_exposure(path)
    _, out = _run(PlainMapper, exposure, *scheduled(name))
    planes = out.mask.getMaskPlaneDict()
    assert planes["INVALID_MAPREDUCE"] != 2 and 2 not in planes.values()
    np.testing.assert_array_equal(out.mask.array, mask)  # every pixel valid: no bad bit set, bit 2 kept
    write_exposure(out, tmp_path / "out.fits")
    back = read_exposure(tmp_path / "out.fits")
    assert back.mask.getMaskPlaneDict() == planes and back.mask.getUnnamedBitMask() == 1 << 2


def test_unnamed_bit_is_not_given_to_a_new_plane(unnamed_bit_file):
    exposure = read_exposure(unnamed_bit_file[0])
    _, out = _run(AddPlaneMapper, exposure)
    planes = out.mask.getMaskPlaneDict()
    assert 2 not in planes.values() and len(set(planes.values())) == len(planes)
    np.testing.assert_array_equal(out.mask.array & (1 << 2), unnamed_bit_file[1] & (1 << 2))


def test_invalid_pixels_get_the_bad_bits_not_the_unnamed_one(unnamed_bit_file):
    exposure = read_exposure(unnamed_bit_file[0])
    exposure.image.array[10, 10] = np.nan
    output, bad = ImageReducer().prepareOutput(exposure)
    assert not bad & (1 << 2)
    _, out = _run(PlainMapper, exposure)
    assert out.mask.array[10, 10] & bad == bad
    assert (out.mask.array & bad != 0).sum() == 1


@pytest.mark.parametrize("name", ["exposure-version-2.fits", "HSC-0908120-056-small.fits", "obs_base_calexp.fits"])
def test_real_lsst_files_keep_their_bits(name):
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"LSST test files not found at {DATA}")
    exposure = read_exposure(path)
    # An unnamed bit (as a later afw could write) on the very bit INVALID_MAPREDUCE would otherwise take.
    unnamed = lowest_free_bit(sum(1 << bit for bit in exposure.mask.getMaskPlaneDict().values()))
    exposure.mask.array[0, 0] |= np.int32(1 << unnamed)
    output, bad = ImageReducer().prepareOutput(exposure)
    assert not output.mask.getPlaneBitMask("INVALID_MAPREDUCE") & pixel_bits(exposure.mask.array)
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(PlainMapper)
    config.reducer.reduceOperation = "copy"
    for key, value in {**GRID, "cellSizeX": 40, "cellSizeY": 40, "gridStepX": 30, "gridStepY": 30}.items():
        setattr(config, key, value)
    out = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    np.testing.assert_array_equal(out.mask.array & ~bad, exposure.mask.array & ~bad)
    assert out.mask.getUnnamedBitMask() == exposure.mask.getUnnamedBitMask() == 1 << unnamed


# == 3. numpy masked arrays ==========================================================================
@pytest.fixture(scope="module")
def masked_image():
    data = np.arange(48, dtype=np.float64).reshape(6, 8)
    mask = np.zeros(data.shape, dtype=bool)
    mask[1, 2] = mask[4, 5] = mask[5, 0] = True
    return np.ma.masked_array(data, mask=mask)


@pytest.mark.parametrize("reduce", ["copy", "average"])
def test_masked_input_pixels_reach_func_as_nan_and_come_back_masked(masked_image, reduce):
    seen = map_reduce(masked_image, record_nan, cell_size=4, border=1, reduce=reduce, scheduler="sync")
    np.testing.assert_array_equal(np.asarray(seen), masked_image.mask.astype(float))
    out = map_reduce(masked_image, twice, cell_size=(3, 4), border=1, reduce=reduce, scheduler="threads")
    assert isinstance(out, np.ma.MaskedArray)
    np.testing.assert_array_equal(out.mask, masked_image.mask)
    np.testing.assert_array_equal(out.compressed(), (masked_image * 2).compressed())


def test_lazy_masked_input_gives_a_lazy_masked_result(masked_image):
    lazy = da.ma.masked_array(da.from_array(masked_image.data, chunks=3), mask=masked_image.mask)
    out = map_reduce(lazy, twice, cell_size=4, reduce="average")
    assert isinstance(out, da.Array)
    computed = out.compute(scheduler="sync")
    np.testing.assert_array_equal(np.ma.getmaskarray(computed), masked_image.mask)
    np.testing.assert_array_equal(computed.compressed(), (masked_image * 2).compressed())


def test_masked_companion_reaches_func_as_nan(masked_image):
    out = map_reduce(masked_image.data, first_companion_nan, cell_size=4, companions={"weight": masked_image},
                     scheduler="sync")  # fmt: skip
    np.testing.assert_array_equal(out, np.where(masked_image.mask, -1.0, masked_image.data))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        (dict(image=np.ma.masked_array(np.arange(16).reshape(4, 4), mask=np.eye(4))), TypeError,
         r"image is a masked array of dtype int64: its masked pixels would reach func as NaN"),
        (dict(image=np.ma.masked_array(np.eye(4, dtype=bool))), TypeError, "masked array of dtype bool"),
        (dict(image=np.ma.masked_array(np.ones((4, 4)), mask=np.eye(4)), reduce="sum"), ValueError,
         r"reduce='sum' of a masked array would give 0.*use reduce='average' or 'copy'"),
        (dict(image=np.ones((4, 4)), companions={"w": np.ma.masked_array(np.ones((4, 4), dtype=np.int32))}),
         TypeError, r"companion 'w' is a masked array of dtype int32"),
    ],
    ids=["int-image", "bool-image", "sum", "int-companion"],
)  # fmt: skip
def test_masked_inputs_that_cannot_be_honoured_are_refused(kwargs, error, match):
    kwargs = {"reduce": "average", **kwargs}
    with pytest.raises(error, match=match):
        map_reduce(kwargs.pop("image"), twice, cell_size=2, scheduler="sync", **kwargs)


@pytest.mark.parametrize("func", [mask_above_five, masked_int_result])
def test_masked_pixels_of_a_result_are_invalid(func):
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    out = map_reduce(image, func, cell_size=2, reduce="copy", scheduler="sync")
    scale = 2.0 if func is mask_above_five else 1.0
    np.testing.assert_array_equal(out, np.where(image > 5, np.nan, image * scale))


def test_masked_result_is_left_out_of_an_average():
    image = np.arange(16, dtype=np.float64).reshape(4, 4)
    # Two cells overlap on column 2; the mask hides values above 5 only where they are masked.
    out = map_reduce(image, mask_above_five, cell_size=(4, 3), grid_step=(4, 2), adjust="none",
                     reduce="average", scheduler="sync")  # fmt: skip
    assert np.isnan(out[image > 5]).all() and np.array_equal(out[image <= 5], image[image <= 5] * 2)


# == 4. results that cannot be stitched ==============================================================
@pytest.mark.parametrize(
    ("func", "match"),
    [
        (return_none_objects, r"returned an array of dtype object for cell \d+ \(box .*\), which cannot be stitched"),
        (return_strings, r"returned an array of dtype <U3 for cell \d+ \(box .*\), which cannot be stitched"),
        (return_datetimes, r"dtype datetime64\[D\] for cell \d+ \(box .*\), which cannot be stitched"),
        (return_none, r"dtype object for cell \d+ \(box .*\), which cannot be stitched"),
    ],
    ids=["objects-of-None", "strings", "datetimes", "None"],
)
def test_func_result_that_cannot_be_stitched_names_the_cell(func, match):
    with pytest.raises(TypeError, match=match):
        map_reduce(np.ones((4, 4)), func, cell_size=2, scheduler="sync")


def test_complex_result_for_a_real_output_is_a_clear_error():
    with pytest.raises(
        CellFailure, match=r"failed on cell \d+ \(box .*\).*returned complex values.*dtype=np.complex128"
    ):
        map_reduce(np.ones((4, 4)), return_complex, cell_size=2, scheduler="sync")


def test_complex_result_with_a_complex_output_is_stitched():
    out = map_reduce(np.ones((4, 4)), return_complex, cell_size=2, dtype=np.complex128, scheduler="sync")
    np.testing.assert_array_equal(out, np.full((4, 4), 1 + 1j))


@pytest.mark.parametrize(
    ("dtype", "plane"),
    [("none", "image"), (np.complex64, "image"), (np.bool_, "image"), ("U3", "variance"), (np.complex128, "variance")],
)
def test_mapper_result_that_cannot_be_stitched_names_the_cell(small, dtype, plane):
    task = _task(BadPixelsMapper)
    with pytest.raises(TypeError, match=rf"mapper result for cell \d+ \(box .*\) has {plane} pixels of dtype .*cannot "
                       rf"be stitched.*real numbers"):  # fmt: skip
        task.run(small, dtype=dtype, plane=plane)


# == 5. a mapper writing into its input fails the same way everywhere ================================
@pytest.mark.parametrize("name", SCHEDULERS)
def test_writing_into_the_input_fails_on_every_scheduler(small, scheduled, name):
    scheduler, client = scheduled(name)
    before = small.image.array.copy()
    with pytest.raises(CellFailure, match=r"mapper WritingMapper failed on cell \d+ .*read-only"):
        _run(WritingMapper, small, scheduler, client)
    np.testing.assert_array_equal(small.image.array, before)


@pytest.mark.parametrize("do_clone", [False, True])
@pytest.mark.parametrize("name", SCHEDULERS)
def test_input_planes_are_read_only_unless_cloned_on_every_scheduler(small, scheduled, name, do_clone):
    scheduler, client = scheduled(name)
    task = _task(ProbeWritesMapper, "none", scheduler, client=client)
    results = task.run(small, doClone=do_clone, template=small.clone()).result
    # doClone gives private copies of the cell and its expanded cell; companions are always read-only cuts.
    want = {"image": do_clone, "mask": do_clone, "variance": do_clone, "expanded": do_clone, "companion": False}
    assert all(r.writeable == want for r in results), results[0].writeable


def test_lazy_input_is_read_only_too(small):
    lazy = Exposure.from_arrays(*(da.from_array(p.array, chunks=16) for p in (small.image, small.mask, small.variance)),
                                xy0=small.getXY0())  # fmt: skip
    with pytest.raises(CellFailure, match="read-only"):
        _run(WritingMapper, lazy, "threads")


def test_do_clone_stitches_the_written_copies(small):
    _, out = _run(WritingMapper, small, "threads", doClone=True)
    assert not out.image.array.any()  # every cell zeroed its private copy
    assert small.image.array.any()


@pytest.mark.parametrize("name", ["processes", "distributed"])
def test_func_inputs_are_read_only_in_worker_processes(scheduled, name):
    scheduler, client = scheduled(name)
    with pytest.raises(CellFailure, match=r"function 'write_into_cell' failed on cell \d+ .*read-only"):
        map_reduce(np.ones((8, 8)), write_into_cell, cell_size=4, scheduler=client or scheduler)
