"""Exposure <-> xarray round trips, and the ``.imr`` accessors."""

# ruff: noqa: D103
from __future__ import annotations

import json

import array_funcs as af
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from conftest import make_exposure

import imagemapreduce as imr
from imagemapreduce.arrays import map_reduce
from imagemapreduce.xarray_support import exposure_from_xarray, exposure_to_xarray


@pytest.fixture
def exposure():
    exp = make_exposure(23, 17, xy0=(40, -12), seed=4, dtype=np.float64, psf=False)
    bit = exp.mask.addMaskPlane("MY_PLANE")
    exp.mask.array[3, 4] |= 1 << bit
    return exp


def assert_same_exposure(back, exp):
    assert back.getBBox() == exp.getBBox()
    assert back.mask.getMaskPlaneDict() == exp.mask.getMaskPlaneDict()
    for plane in ("image", "mask", "variance"):
        np.testing.assert_array_equal(np.asarray(getattr(back, plane).array), np.asarray(getattr(exp, plane).array))


def test_dataset_layout_coordinates_and_attrs(exposure):
    ds = exposure_to_xarray(exposure)
    assert set(ds.data_vars) == {"image", "mask", "variance"}
    assert all(ds[name].dims == ("y", "x") for name in ds.data_vars)
    np.testing.assert_array_equal(ds.x, 40 + np.arange(23))
    np.testing.assert_array_equal(ds.y, -12 + np.arange(17))
    assert ds.attrs == {"x0": 40, "y0": -12}
    planes = dict(zip(ds.mask.attrs["flag_meanings"].split(), ds.mask.attrs["flag_masks"], strict=True))
    assert planes["MY_PLANE"] == 1 << exposure.mask.getMaskPlane("MY_PLANE")
    json.dumps(ds.attrs), json.dumps(ds.mask.attrs)  # netCDF/zarr-friendly: plain ints, lists, strings
    assert np.shares_memory(ds.image.values, exposure.image.array), "conversion shares numpy pixels"


def test_round_trip_keeps_planes_xy0_and_plane_dict(exposure):
    back = exposure_from_xarray(exposure_to_xarray(exposure))
    assert type(back) is imr.ExposureD
    assert_same_exposure(back, exposure)


def test_round_trip_through_zarr(exposure, tmp_path):
    exposure_to_xarray(exposure).to_zarr(tmp_path / "exp.zarr", consolidated=False)
    with xr.open_dataset(tmp_path / "exp.zarr", engine="zarr", consolidated=False) as ds:
        back = exposure_from_xarray(ds.load())
    assert_same_exposure(back, exposure)


def test_dask_backed_stays_lazy(exposure):
    lazy = imr.ExposureD.from_arrays(
        da.from_array(exposure.image.array, chunks=8), da.from_array(exposure.mask.array, chunks=8),
        da.from_array(exposure.variance.array, chunks=8), xy0=exposure.getXY0(),
        planeDict=exposure.mask.getMaskPlaneDict(),
    )  # fmt: skip
    ds = exposure_to_xarray(lazy)
    assert all(isinstance(ds[name].data, da.Array) for name in ds.data_vars)
    back = exposure_from_xarray(ds)
    assert isinstance(back.image.array, da.Array) and isinstance(back.variance.array, da.Array)
    assert_same_exposure(back, exposure)


def test_xy0_follows_coordinates_of_a_slice(exposure):
    ds = exposure_to_xarray(exposure).isel(x=slice(5, None), y=slice(2, 9))
    back = exposure_from_xarray(ds)
    assert tuple(back.getXY0()) == (45, -10)
    np.testing.assert_array_equal(back.image.array, exposure.image.array[2:9, 5:])
    no_coords = exposure_to_xarray(exposure).drop_vars(["x", "y"])
    assert tuple(exposure_from_xarray(no_coords).getXY0()) == (40, -12)  # from attrs


def test_transposed_variables_and_dataarray_input(exposure):
    ds = exposure_to_xarray(exposure).transpose("x", "y")
    assert_same_exposure(exposure_from_xarray(ds), exposure)
    image_only = exposure_from_xarray(exposure_to_xarray(exposure).image.astype(np.float32))
    assert type(image_only) is imr.ExposureF and tuple(image_only.getXY0()) == (40, -12)
    assert not image_only.mask.array.any() and not image_only.variance.array.any()


@pytest.mark.parametrize(
    "change, error, match",
    [
        (lambda ds: ds.drop_vars("image"), ValueError, "no 'image' variable"),
        (lambda ds: ds.rename(x="col"), ValueError, r"exposure planes need dims \('y', 'x'\)"),
        (lambda ds: ds.assign_coords(x=ds.x * 2), ValueError, "must be consecutive integer pixel indices"),
        (
            lambda ds: ds.assign(mask=ds.mask.assign_attrs(flag_masks=[3] * len(ds.mask.attrs["flag_masks"]))),
            ValueError,
            "must be a single bit",
        ),
        (
            lambda ds: ds.assign(mask=ds.mask.assign_attrs(flag_meanings="BAD")),
            ValueError,
            "flag_meanings names 1",
        ),
        (lambda ds: ds.image.values, TypeError, "takes an xarray.Dataset or DataArray"),
    ],
    ids=["no image", "wrong dims", "non-pixel coords", "multi-bit flag", "flag count", "not xarray"],
)
def test_from_xarray_errors(exposure, change, error, match):
    with pytest.raises(error, match=match):
        exposure_from_xarray(change(exposure_to_xarray(exposure)))


def test_plane_names_with_spaces_are_refused(exposure):
    exposure.mask.addMaskPlane("TWO WORDS")
    with pytest.raises(ValueError, match="cannot be stored as CF flag_meanings"):
        exposure_to_xarray(exposure)


def test_dataarray_accessor_is_map_reduce(exposure):
    ds = exposure_to_xarray(exposure)
    out = ds.image.imr.map_reduce(af.minus_min_with_holes, cell_size=(6, 8), border=2, scheduler="sync")
    expected = map_reduce(ds.image.values, af.minus_min_with_holes, cell_size=(6, 8), border=2, scheduler="sync")
    assert isinstance(out, xr.DataArray) and out.x.equals(ds.x) and out.name == "image"
    np.testing.assert_array_equal(out.values, expected)
    lazy = ds.image.chunk(7).imr.map_reduce(af.affine, cell_size=5)
    assert isinstance(lazy.data, da.Array)
    np.testing.assert_array_equal(lazy.compute(scheduler="sync").values, ds.image.values * 2 + 1)


def test_dataset_accessor_and_exposure_pipeline(exposure):
    ds = exposure_to_xarray(exposure)
    assert_same_exposure(ds.imr.to_exposure(), exposure)
    # Filter the image as an array, keep mask and variance: back to an exposure in its parent frame.
    filtered = ds.assign(image=ds.image.imr.map_reduce(af.affine, cell_size=8, scheduler="sync"))
    back = filtered.imr.to_exposure()
    assert tuple(back.getXY0()) == (40, -12)
    np.testing.assert_array_equal(back.image.array, exposure.image.array * 2 + 1)
    image_only = imr.ExposureD.from_arrays(exposure.image.array, xy0=exposure.getXY0())
    assert_same_exposure(ds.image.imr.to_exposure(), image_only)


@pytest.mark.skipif(not hasattr(imr.Exposure, "to_xarray"), reason="Exposure.to_xarray not wired in yet")
def test_exposure_methods_delegate(exposure):
    ds = exposure.to_xarray()
    back = imr.ExposureD.from_xarray(ds)
    assert type(back) is imr.ExposureD
    assert_same_exposure(back, exposure)


@pytest.mark.skipif(not hasattr(imr, "map_reduce"), reason="imagemapreduce.map_reduce not exported yet")
def test_package_exports():
    assert imr.map_reduce is map_reduce
    assert imr.exposure_to_xarray is exposure_to_xarray and imr.exposure_from_xarray is exposure_from_xarray
