"""Tests for `imagemapreduce.io.fits`: the FITS layout the LSST stack (lsst.afw) reads and writes.

The real LSST-written files live outside the repository, in ``../shared/data/afw-fits`` (see its
README); tests that need them are skipped where that folder is absent.
"""

# ruff: noqa: D101, D102, D103

from __future__ import annotations

import logging
import os
import pickle
from pathlib import Path

import dask.array as da
import numpy as np
import pytest
from astropy.io import fits
from astropy.io.fits.hdu.image import Section
from astropy.wcs import WCS

from imagemapreduce.geom import Box2I, Extent2I, Point2I
from imagemapreduce.image import (
    DEFAULT_MASK_PLANES,
    Exposure,
    ExposureD,
    ExposureF,
    Mask,
    MaskedImage,
    MaskedImageF,
)
from imagemapreduce.io.fits import (
    FitsFormatError,
    FitsLayoutWarning,
    read_exposure,
    read_masked_image,
    write_exposure,
    write_masked_image,
)
from imagemapreduce.psf import DoubleGaussianPsf, GaussianPsf

# The LSST-written files: IMR_TEST_DATA names their folder, else the one beside the repository.
DATA = Path(os.environ.get("IMR_TEST_DATA") or Path(__file__).resolve().parents[2] / "shared" / "data" / "afw-fits")
DEFAULT_PLANES = {name: bit for bit, name in enumerate(DEFAULT_MASK_PLANES)}
HSC_PLANES = {**{k: v for k, v in DEFAULT_PLANES.items() if k != "NO_DATA"}, "CROSSTALK": 8, "NO_DATA": 9,
              "UNMASKEDNAN": 10}  # fmt: skip
OLD_PLANES = {"BAD": 0, "SAT": 1, "INTRP": 2, "CR": 3, "EDGE": 4, "DETECTED": 5, "DETECTED_NEGATIVE": 6}


def real(name: str) -> Path:
    """Return the path of a real LSST-written file, skipping the test where the data folder is absent."""
    if not DATA.is_dir():
        pytest.skip(f"LSST test files not found at {DATA}: set IMR_TEST_DATA to their folder")
    path = DATA / name
    if not path.is_file():
        pytest.skip(f"{name} not found in {DATA}")
    return path


def raw_hdu(path: Path, index: int) -> tuple[np.ndarray, fits.Header]:
    """Return the unscaled integers (or floats) of one HDU, as stored on disk, and its header."""
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        return np.array(hdul[index].data), hdul[index].header.copy()


def bits(array: np.ndarray) -> np.ndarray:
    """Floats as integers, so that equality is bit identity (NaN payloads and -0.0 included)."""
    return array.view(np.uint32 if array.dtype == np.float32 else np.uint64)


def make_exposure(cls=ExposureF, xy0=(13, -7), psf=None, shape=(23, 31), seed=1):
    rng = np.random.default_rng(seed)
    dtype = np.float32 if cls is ExposureF else np.float64
    image = rng.normal(100.0, 10.0, size=shape).astype(dtype)
    image[0, 0], image[1, 1], image[2, 2] = np.nan, -0.0, np.inf
    variance = rng.uniform(1.0, 5.0, size=shape).astype(dtype)
    planes = dict(DEFAULT_PLANES)
    planes["A_VERY_LONG_CUSTOM_PLANE_NAME"] = 31
    mask = rng.integers(0, 2**9, size=shape).astype(np.int32)
    mask[-1, -1] |= np.int32(-(2**31))  # bit 31: the int32 sign bit
    return cls.from_arrays(image, mask, variance, xy0=Point2I(*xy0), psf=psf, planeDict=planes)


@pytest.fixture
def written(tmp_path):
    """Write a good ExposureF file with a GaussianPsf; return its path and the exposure."""
    exposure = make_exposure(psf=GaussianPsf(5, 7, 1.5))
    path = tmp_path / "good.fits"
    write_exposure(exposure, path)
    return path, exposure


# -- real files written by the LSST stack ----------------------------------------------------------
def test_exposure_version_2():
    path = real("exposure-version-2.fits")
    exposure = read_exposure(path)
    assert exposure.getDimensions() == Extent2I(10, 10)
    assert exposure.getXY0() == Point2I(0, 0)
    np.testing.assert_array_equal(exposure.image.array, np.arange(100, dtype=np.float32).reshape(10, 10))
    np.testing.assert_array_equal(exposure.variance.array, 1.0)
    expected_mask = np.zeros((10, 10), np.int32)
    expected_mask[5, 5] = 5
    np.testing.assert_array_equal(exposure.mask.array, expected_mask)
    assert exposure.mask.array.dtype == np.int32
    assert exposure.mask.getMaskPlaneDict() == DEFAULT_PLANES
    assert exposure.getPsf() is None  # the archive holds a WCS, a PhotoCalib... but no PSF
    metadata = exposure.getMetadata()
    assert metadata["EXPID"] == 12345 and metadata["DETNAME"] == "detector 1"
    assert not {"AR_HDU", "EXTTYPE", "CRVAL1A", "LTV1", "ARCHIVE_ID_SKYWCS", "SKYWCS_ID"} & set(metadata)
    assert isinstance(exposure.getWcs(), WCS) and exposure.getWcs().has_celestial


def test_hsc_cutout_uint16_mask_and_wcs():
    path = real("HSC-0908120-056-small.fits")
    exposure = read_exposure(path)
    assert exposure.getBBox() == Box2I(Point2I(100, 100), Extent2I(200, 200))
    raw, header = raw_hdu(path, 2)
    assert raw.dtype == np.dtype(">i2") and header["BZERO"] == 32768
    mask = exposure.mask.array
    assert mask.dtype == np.int32
    np.testing.assert_array_equal(mask, raw.astype(np.int32) + 32768)
    np.testing.assert_array_equal(mask, fits.getdata(path, 2))  # astropy's own uint16 reading agrees
    assert mask.any()
    assert exposure.mask.getMaskPlaneDict() == HSC_PLANES
    assert all(plane.getXY0() == Point2I(100, 100) for plane in (exposure.image, exposure.mask, exposure.variance))
    np.testing.assert_array_equal(exposure.image.array, raw_hdu(path, 1)[0])
    # The WCS is in parent pixels: parent (100 + x, 100 + y) is the file's array pixel (x, y).
    with fits.open(path) as hdul:
        file_wcs = WCS(hdul[1].header)
    for x, y in [(0.0, 0.0), (37.5, 12.0), (199.0, 150.25)]:
        np.testing.assert_allclose(
            exposure.getWcs().pixel_to_world_values(x + 100, y + 100),
            file_wcs.pixel_to_world_values(x, y),
            rtol=0,
            atol=1e-12,
        )


def test_obs_base_calexp_modern_layout_with_gaussian_psf():
    path = real("obs_base_calexp.fits")
    exposure = read_exposure(path)
    assert exposure.getDimensions() == Extent2I(64, 32)
    assert exposure.image.array.shape == (32, 64)
    planes = exposure.mask.getMaskPlaneDict()
    assert len(planes) == 15
    assert planes["STREAK"] == 10 and planes["NOT_DEBLENDED"] == 13 and planes["VIGNETTED"] == 9
    assert exposure.getPsf() == GaussianPsf(3, 3, 4.0)
    np.testing.assert_array_equal(exposure.mask.array, raw_hdu(path, 2)[0])
    np.testing.assert_array_equal(exposure.variance.array, raw_hdu(path, 3)[0])


def test_obs_base_small_blank_mask_is_read_as_int32():
    path = real("obs_base_small.fits")
    raw, header = raw_hdu(path, 2)
    assert "BLANK" in header
    assert fits.getdata(path, 2).dtype.kind == "f"  # the naive astropy read scales to float
    exposure = read_exposure(path)
    assert exposure.getDimensions() == Extent2I(16, 16)
    assert exposure.mask.array.dtype == np.int32
    np.testing.assert_array_equal(exposure.mask.array, raw)
    assert exposure.getPsf() == GaussianPsf(3, 3, 4.0)
    assert exposure.mask.getMaskPlaneDict() == DEFAULT_PLANES


def test_pipe_tasks_coadd_v1():
    exposure = read_exposure(real("pipe_tasks_coadd_v1.fits"))
    assert exposure.getBBox() == Box2I(Point2I(100, 100), Extent2I(10, 10))
    assert exposure.mask.getMaskPlaneDict() == DEFAULT_PLANES


def test_ip_diffim_science_masked_image():
    path = real("ip_diffim_scienceMI.fits")
    mi = read_masked_image(path)
    assert type(mi) is MaskedImage
    assert mi.getBBox() == Box2I(Point2I(9, 9), Extent2I(193, 193))
    assert mi.mask.getMaskPlaneDict() == OLD_PLANES
    np.testing.assert_array_equal(mi.mask.array, raw_hdu(path, 2)[0].astype(np.int32) + 32768)
    assert type(read_masked_image(path, cls=MaskedImageF)) is MaskedImageF


def test_ip_diffim_template_inconsistent_xy0_follows_the_image_plane():
    path = real("ip_diffim_templateMI.fits")
    with pytest.warns(FitsLayoutWarning, match=r"IMAGE plane's xy0 \(24, 24\)") as record:
        mi = read_masked_image(path)
    message = str(record[0].message)
    assert path.name in message and "MASK (HDU 2) says (9, 9)" in message
    for plane in (mi.image, mi.mask, mi.variance):
        assert plane.getXY0() == Point2I(24, 24)
    with pytest.warns(FitsLayoutWarning):
        assert read_exposure(path).getXY0() == Point2I(24, 24)


def test_parent_fits_image_in_primary_hdu():
    path = real("parent.fits")
    exposure = read_exposure(path)
    assert exposure.getDimensions() == Extent2I(256, 256)
    np.testing.assert_array_equal(exposure.image.array, raw_hdu(path, 0)[0])
    np.testing.assert_array_equal(exposure.mask.array, raw_hdu(path, 1)[0].astype(np.int32) + 32768)
    np.testing.assert_array_equal(exposure.variance.array, raw_hdu(path, 2)[0])
    assert exposure.mask.getMaskPlaneDict() == OLD_PLANES
    assert exposure.getWcs().has_celestial


@pytest.mark.parametrize("cls, dtype", [(ExposureF, np.float32), (ExposureD, np.float64)])
def test_class_chooses_the_pixel_type(cls, dtype):
    exposure = (
        cls.readFits(real("obs_base_small.fits"))
        if hasattr(cls, "readFits")
        else read_exposure(real("obs_base_small.fits"), cls=cls)
    )
    assert type(exposure) is cls
    assert exposure.image.array.dtype == dtype and exposure.variance.array.dtype == dtype


# -- lazy reads -------------------------------------------------------------------------------------
@pytest.fixture
def section_reads(monkeypatch):
    """Count astropy ``Section`` reads from outside astropy (it recurses row by row internally)."""
    calls = []
    depth = [0]
    original = Section.__getitem__

    def counting(self, key):
        if depth[0] == 0:
            calls.append(key)
        depth[0] += 1
        try:
            return original(self, key)
        finally:
            depth[0] -= 1

    monkeypatch.setattr(Section, "__getitem__", counting)
    return calls


@pytest.mark.parametrize(
    "name, chunks",
    [
        ("HSC-0908120-056-small.fits", (64, 48)),
        ("obs_base_calexp.fits", (8, 16)),
        ("obs_base_small.fits", (8, 16)),
        ("parent.fits", (64, 100)),
    ],
)
def test_lazy_read_equals_eager_and_reads_nothing_until_computed(name, chunks, section_reads):
    path = real(name)
    eager = read_exposure(path)
    lazy = read_exposure(path, lazy=True, chunks=chunks)
    assert section_reads == []  # building the exposure read no pixels
    for plane in ("image", "mask", "variance"):
        array = getattr(lazy, plane).array
        assert isinstance(array, da.Array)
        assert array.numblocks[0] > 1 and array.dtype == getattr(eager, plane).array.dtype
    first = lazy.image.array.blocks[0, 0].compute()
    assert len(section_reads) == 1  # one chunk, one read
    np.testing.assert_array_equal(first, eager.image.array[: chunks[0], : chunks[1]])
    for plane in ("image", "mask", "variance"):
        np.testing.assert_array_equal(getattr(lazy, plane).array.compute(), getattr(eager, plane).array)
    assert lazy.getXY0() == eager.getXY0() and lazy.getPsf() == eager.getPsf()
    assert lazy.mask.getMaskPlaneDict() == eager.mask.getMaskPlaneDict()


def test_lazy_arrays_pickle_and_hold_no_open_file(written):
    path, exposure = written
    lazy = read_exposure(path, lazy=True, chunks=5)
    clone = pickle.loads(pickle.dumps(lazy.mask.array))
    np.testing.assert_array_equal(clone.compute(), exposure.mask.array)
    os.replace(path, path.with_suffix(".moved"))  # no handle is kept: the next read opens the file
    with pytest.raises(FileNotFoundError):
        lazy.image.array.compute()


def test_lazy_read_of_a_changed_file_is_refused(written, tmp_path):
    path, exposure = written
    lazy = read_exposure(path, lazy=True)
    write_exposure(make_exposure(shape=(10, 12)), path, overwrite=True)
    with pytest.raises(FitsFormatError, match="changed"):
        lazy.image.array.compute()


# -- round trips ------------------------------------------------------------------------------------
@pytest.mark.parametrize("psf", [GaussianPsf(5, 7, 1.5), DoubleGaussianPsf(9, 11, 1.25, 3.5, 0.125), None])
def test_round_trip_exposure_f(tmp_path, psf):
    exposure = make_exposure(psf=psf)
    path = tmp_path / "roundtrip.fits"
    write_exposure(exposure, path)
    back = read_exposure(path, cls=ExposureF)
    assert type(back) is ExposureF
    assert back.getXY0() == Point2I(13, -7)
    for plane in ("image", "variance"):
        ours, theirs = getattr(back, plane).array, getattr(exposure, plane).array
        assert ours.dtype == np.float32
        np.testing.assert_array_equal(bits(ours), bits(theirs))
    np.testing.assert_array_equal(back.mask.array, exposure.mask.array)
    assert back.mask.array.dtype == np.int32
    assert back.mask.getMaskPlaneDict() == exposure.mask.getMaskPlaneDict()
    assert back.getPsf() == psf and type(back.getPsf()) is type(psf)


def test_written_header_cards_follow_the_afw_layout(written):
    path, exposure = written
    with fits.open(path, do_not_scale_image_data=True) as hdul:
        primary = hdul[0]
        assert primary.header["NAXIS"] == 0 and primary.data is None
        assert primary.header["AR_HDU"] == 5 and primary.header["EXPINFO_V"] == 2
        assert primary.header["PSF_ID"] == primary.header["ARCHIVE_ID_PSF"] == 1
        for index, role in enumerate(("IMAGE", "MASK", "VARIANCE"), start=1):
            header = hdul[index].header
            assert isinstance(hdul[index], fits.ImageHDU)
            assert header["EXTTYPE"] == role and header["EXTNAME"] == role
            assert header["INHERIT"] is True
            assert (header["CRVAL1A"], header["CRVAL2A"]) == (13, -7)
            assert (header["CRPIX1A"], header["CRPIX2A"]) == (1, 1)
            assert header["CTYPE1A"] == header["CTYPE2A"] == "LINEAR"
            assert header["CUNIT1A"] == header["CUNIT2A"] == "PIXEL"
            assert (header["LTV1"], header["LTV2"]) == (-13, 7)
        assert [hdul[i].header["BITPIX"] for i in (1, 2, 3)] == [-32, 32, -32]
        mask_header = hdul[2].header
        assert "BZERO" not in mask_header
        mp = {key[3:]: value for key, value in mask_header.items() if key.startswith("MP_")}
        assert mp == exposure.mask.getMaskPlaneDict()
        assert "HIERARCH MP_A_VERY_LONG_CUSTOM_PLANE_NAME = 31" in str(mask_header)
        assert "MP_BAD  =                    0" in str(mask_header)
        index = hdul[4]
        assert index.header["EXTTYPE"] == index.header["EXTNAME"] == "ARCHIVE_INDEX"
        assert index.header["AR_NCAT"] == 2
        assert index.data.columns.names == [
            "id",
            "cat.archive",
            "cat.persistable",
            "row0",
            "nrows",
            "name",
            "module",
        ]
        assert [tuple(row)[:6] for row in index.data] == [(1, 1, 0, 0, 1, "GaussianPsf")]
        assert index.data["module"][0] == "lsst.afw.detection"
        data = hdul[5]
        assert data.header["EXTTYPE"] == "ARCHIVE_DATA" and data.header["AR_CATN"] == 1
        assert data.header["AR_NAME"] == "GaussianPsf"
        assert data.data.columns.names == ["dimensions_x", "dimensions_y", "sigma"]
        assert [c.format for c in data.data.columns] == ["1J", "1J", "1D"]
        assert tuple(data.data[0]) == (5, 7, 1.5)


def test_exposure_d_round_trip_keeps_float64(tmp_path):
    exposure = make_exposure(cls=ExposureD, psf=DoubleGaussianPsf(7, 7, 1.0, 2.0, 0.1))
    path = tmp_path / "d.fits"
    write_exposure(exposure, path)  # afw's layout: variance on disk is float32
    back = read_exposure(path, cls=ExposureD)
    assert back.image.array.dtype == back.variance.array.dtype == np.float64
    np.testing.assert_array_equal(bits(back.image.array), bits(exposure.image.array))
    np.testing.assert_array_equal(back.variance.array, exposure.variance.array.astype(np.float32))
    assert fits.getheader(path, 3)["BITPIX"] == -32
    exact = tmp_path / "d64.fits"
    write_exposure(exposure, exact, variance_dtype=None)
    assert fits.getheader(exact, 3)["BITPIX"] == -64
    again = read_exposure(exact)  # Exposure keeps the file's float64
    np.testing.assert_array_equal(bits(again.variance.array), bits(exposure.variance.array))
    assert again.image.array.dtype == np.float64


def test_masked_image_round_trip(tmp_path):
    exposure = make_exposure()
    mi = exposure.getMaskedImage()
    path = tmp_path / "mi.fits"
    write_masked_image(mi, path)
    with fits.open(path) as hdul:
        assert len(hdul) == 4 and hdul[0].header["NAXIS"] == 0
        assert "LTV1" not in hdul[1].header and hdul[1].header["CRVAL1A"] == 13
        assert "AR_HDU" not in hdul[0].header
    back = read_masked_image(path, cls=MaskedImageF)
    assert back.getXY0() == mi.getXY0()
    np.testing.assert_array_equal(bits(back.image.array), bits(mi.image.array))
    np.testing.assert_array_equal(back.mask.array, mi.mask.array)
    assert back.mask.getMaskPlaneDict() == mi.mask.getMaskPlaneDict()
    assert read_exposure(path).getPsf() is None


def test_wcs_and_metadata_round_trip_through_a_subimage(tmp_path):
    exposure = read_exposure(real("HSC-0908120-056-small.fits"))
    sub = exposure[Box2I(Point2I(150, 120), Extent2I(40, 30))]
    sub.getMetadata()["HIERARCH_STYLE_LONG_KEY"] = "kept"
    sub.getMetadata()["OBSERVER"] = "somebody"
    path = tmp_path / "sub.fits"
    write_exposure(sub, path)
    back = read_exposure(path)
    assert back.getXY0() == Point2I(150, 120)
    for x, y in [(150, 120), (170.5, 141.25), (189, 149)]:
        np.testing.assert_allclose(
            back.getWcs().pixel_to_world_values(x, y),
            exposure.getWcs().pixel_to_world_values(x, y),
            rtol=0,
            atol=1e-10,
        )
    assert back.getMetadata()["HIERARCH_STYLE_LONG_KEY"] == "kept"
    assert back.getMetadata()["OBSERVER"] == "somebody"
    assert back.getMetadata()["FILTER"] == exposure.getMetadata()["FILTER"]
    # The sky WCS is written relative to the subimage's own array, as afw writes it.
    with fits.open(path) as hdul:
        crpix = hdul[1].header["CRPIX1"], hdul[1].header["CRPIX2"]
    with fits.open(real("HSC-0908120-056-small.fits")) as hdul:
        original = hdul[1].header["CRPIX1"], hdul[1].header["CRPIX2"]
    np.testing.assert_allclose(crpix, (original[0] - 50, original[1] - 20), atol=1e-9)


def _stamp(x, y):
    return np.exp(-0.5 * np.add.outer(np.arange(-3, 4) ** 2, np.arange(-3, 4) ** 2) / 1.5**2)


def test_unwritable_metadata_and_other_psfs_are_logged_and_skipped(tmp_path, caplog):
    from imagemapreduce.psf import CallablePsf

    # A PSF that is a function (here, a user's model) has no description as data: it is not written.
    exposure = make_exposure(psf=CallablePsf(_stamp))
    exposure.getMetadata().update({"LISTY": [1, 2], "NANNY": float("nan"), "GOOD": 3})
    path = tmp_path / "skip.fits"
    with caplog.at_level(logging.WARNING, logger="imagemapreduce.io"):
        write_exposure(exposure, path)
    text = caplog.text
    assert "CallablePsf" in text and "LISTY" in text and "NANNY" in text
    back = read_exposure(path)
    assert back.getPsf() is None and back.getMetadata()["GOOD"] == 3
    assert "PSF_ID" not in fits.getheader(path, 0)


def test_unknown_psf_in_archive_is_logged_and_skipped(written, tmp_path, caplog):
    path, _ = written
    with fits.open(path) as hdul:
        hdul[4].data["name"][0] = "PcaPsf"
        hdul.writeto(tmp_path / "pca.fits")
    with caplog.at_level(logging.WARNING, logger="imagemapreduce.io"):
        exposure = read_exposure(tmp_path / "pca.fits")
    assert exposure.getPsf() is None and "PcaPsf" in caplog.text


# -- plain FITS images ------------------------------------------------------------------------------
@pytest.fixture
def plain(tmp_path):
    image = np.arange(35, dtype=np.float64).reshape(5, 7)
    path = tmp_path / "plain.fits"
    fits.PrimaryHDU(image).writeto(path)
    return path, image


@pytest.mark.parametrize(
    "variance, expected",
    [(None, 0.0), (2.5, 2.5), ("image", "image"), (np.full((5, 7), 4.0), 4.0)],
)
def test_plain_fits_image(plain, variance, expected):
    path, image = plain
    exposure = read_exposure(path, variance=variance)
    np.testing.assert_array_equal(exposure.image.array, image)
    assert exposure.image.array.dtype == np.float64 and exposure.getXY0() == Point2I(0, 0)
    np.testing.assert_array_equal(exposure.mask.array, 0)
    assert exposure.mask.getMaskPlaneDict() == DEFAULT_PLANES
    np.testing.assert_array_equal(exposure.variance.array, image if expected == "image" else expected)
    if expected == "image":
        assert not np.shares_memory(exposure.variance.array, exposure.image.array)
    lazy = read_exposure(path, variance=variance, lazy=True)
    np.testing.assert_array_equal(lazy.variance.array.compute(), exposure.variance.array)


def test_plain_fits_bad_variance_option(plain):
    path, _ = plain
    with pytest.raises(ValueError, match="shape"):
        read_exposure(path, variance=np.ones((2, 2)))
    with pytest.raises(ValueError, match="'image'"):
        read_exposure(path, variance="poisson")


def test_plain_integer_image_and_hdu_option(tmp_path):
    counts = np.array([[0, 1, 65535], [40000, 2, 3]], dtype=np.uint16)
    path = tmp_path / "counts.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(counts, name="SCI"), fits.ImageHDU(counts * 0)]).writeto(path)
    with pytest.raises(FitsFormatError, match="hdu=N"):
        read_exposure(path)
    exposure = read_exposure(path, hdu="SCI", variance="image")
    assert exposure.image.array.dtype == np.float32
    np.testing.assert_array_equal(exposure.image.array, counts)
    np.testing.assert_array_equal(exposure.variance.array, counts)
    assert read_exposure(path, hdu=2).image.array.max() == 0


# -- damaged files ----------------------------------------------------------------------------------
def _truncate_in_data(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _truncate_last_bytes(path):
    data = path.read_bytes()
    path.write_bytes(data[:-1000])


def _truncate_in_header(path):
    data = path.read_bytes()
    path.write_bytes(data[: 2880 + 1000])


def _random_bytes(path):
    path.write_bytes(np.random.default_rng(3).integers(0, 256, 10000, dtype=np.uint8).tobytes())


def _empty(path):
    path.write_bytes(b"")


def _rewrite(path, change):
    with fits.open(path) as hdul:
        hdus = [hdu.copy() for hdu in hdul]
    hdus = change(hdus) or hdus
    path.unlink()
    fits.HDUList(hdus).writeto(path)


def _drop_mask(path):
    _rewrite(path, lambda hdus: [h for i, h in enumerate(hdus) if i != 2])


def _complex_image(path):
    column = fits.Column(name="pixels", format="C", array=np.ones(4, np.complex64))
    table = fits.BinTableHDU.from_columns([column], name="IMAGE")
    table.header["EXTTYPE"] = "IMAGE"

    def change(hdus):
        hdus[1] = table

    _rewrite(path, change)


def _duplicate_bits(path):
    _rewrite(path, lambda hdus: hdus[2].header.set("MP_TWIN", 3))


def _duplicate_names(path):
    _rewrite(path, lambda hdus: hdus[2].header.append(("MP_BAD", 12), bottom=True))


def _bad_bit(path):
    _rewrite(path, lambda hdus: hdus[2].header.set("MP_HUGE", 40))


def _float_mask(path):
    def change(hdus):
        hdus[2] = fits.ImageHDU(hdus[2].data.astype(np.float32), header=hdus[2].header)

    _rewrite(path, change)


def _cube_image(path):
    def change(hdus):
        hdus[1] = fits.ImageHDU(np.stack([hdus[1].data] * 2), header=hdus[1].header)

    _rewrite(path, change)


def _shape_mismatch(path):
    def change(hdus):
        hdus[3] = fits.ImageHDU(hdus[3].data[:-1], header=hdus[3].header)

    _rewrite(path, change)


def _duplicate_role(path):
    _rewrite(path, lambda hdus: hdus[3].header.set("EXTTYPE", "MASK"))


@pytest.mark.parametrize(
    "damage, hdu, match",
    [
        (_truncate_in_data, None, "truncated"),
        (_truncate_last_bytes, None, "truncated"),
        (_truncate_in_header, "HDU 1", "corrupt or truncated"),
        (_random_bytes, "HDU 0", "not a readable FITS file"),
        (_empty, "HDU 0", "not a readable FITS file"),
        (_drop_mask, "HDU 2", "no MASK plane"),
        (_complex_image, "HDU 1", "not an image HDU"),
        (_duplicate_bits, "HDU 2", "both claim bit 3"),
        (_duplicate_names, "HDU 2", "'BAD' appears twice"),
        (_bad_bit, "HDU 2", "MP_HUGE = 40"),
        (_float_mask, "HDU 2", "floating-point"),
        (_cube_image, "HDU 1", "2-d image"),
        (_shape_mismatch, "HDU 3", "VARIANCE plane does not match the IMAGE plane"),
        (_duplicate_role, "HDU 3", "claim to be the MASK plane"),
    ],
)
def test_damaged_files_raise_fits_format_error(written, damage, hdu, match):
    path, _ = written
    damage(path)
    for read in (read_exposure, read_masked_image):
        with pytest.raises(FitsFormatError, match=match) as info:
            read(path)
        message = str(info.value)
        assert path.name in message and "HDU" in message
        if hdu is not None:
            assert hdu in message
        assert info.value.path == str(path) and isinstance(info.value.hdu, int)
        assert isinstance(info.value, ValueError)


def test_missing_file_is_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_exposure(tmp_path / "nope.fits")


def test_fits_format_error_pickles():
    error = pickle.loads(pickle.dumps(FitsFormatError("bad", "/x/y.fits", 3)))
    assert (error.path, error.hdu, str(error)) == ("/x/y.fits", 3, "FITS file '/x/y.fits', HDU 3: bad")


# -- writing safely -------------------------------------------------------------------------------
def test_overwrite_is_refused_unless_asked(written):
    path, exposure = written
    before = path.read_bytes()
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_exposure(make_exposure(shape=(4, 4)), path)
    assert path.read_bytes() == before
    write_exposure(make_exposure(shape=(4, 4)), path, overwrite=True)
    assert read_exposure(path).getDimensions() == Extent2I(4, 4)
    assert os.listdir(path.parent) == [path.name]


def _leftovers(folder: Path) -> list[str]:
    return sorted(os.listdir(folder))


def test_failed_write_bad_dtypes_leaves_nothing(tmp_path):
    exposure = make_exposure()
    exposure.mask.array = exposure.mask.array.astype(np.float32)  # not a valid mask any more
    with pytest.raises(TypeError, match="MASK"):
        write_exposure(exposure, tmp_path / "bad.fits")
    complex_image = make_exposure()
    complex_image.image.array = complex_image.image.array.astype(np.complex64)
    with pytest.raises(TypeError, match="complex64"):
        write_exposure(complex_image, tmp_path / "bad.fits")
    assert _leftovers(tmp_path) == []


def test_failed_write_mid_file_leaves_nothing_and_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "target.fits"
    write_exposure(make_exposure(), path)
    before = path.read_bytes()

    def half_written(self, fileobj, **kwargs):
        fileobj.write(b"SIMPLE  =                    T" + b" " * 2000)
        raise OSError("disk full")

    monkeypatch.setattr(fits.HDUList, "writeto", half_written)
    with pytest.raises(OSError, match="disk full"):
        write_exposure(make_exposure(shape=(4, 4)), path, overwrite=True)
    assert path.read_bytes() == before
    with pytest.raises(OSError, match="disk full"):
        write_exposure(make_exposure(), tmp_path / "new.fits")
    assert _leftovers(tmp_path) == ["target.fits"]


def test_failed_dask_computation_leaves_nothing(tmp_path):
    def explode(block):
        raise RuntimeError("worker lost")

    exposure = make_exposure()
    image = da.from_array(exposure.image.array, chunks=8).map_blocks(explode, dtype=np.float32)
    broken = ExposureF.from_arrays(image, exposure.mask.array, exposure.variance.array, xy0=exposure.getXY0())
    with pytest.raises(RuntimeError, match="worker lost"):
        write_exposure(broken, tmp_path / "lazy.fits")
    assert _leftovers(tmp_path) == []


def test_lazy_exposure_can_be_written(written, tmp_path):
    path, exposure = written
    lazy = read_exposure(path, lazy=True, chunks=7)
    copy = tmp_path / "copy.fits"
    write_exposure(lazy, copy)
    back = read_exposure(copy)
    np.testing.assert_array_equal(bits(back.image.array), bits(exposure.image.array))
    assert back.getPsf() == exposure.getPsf()


def test_write_rejects_wrong_types(tmp_path):
    with pytest.raises(TypeError, match="Exposure"):
        write_exposure(make_exposure().getMaskedImage(), tmp_path / "x.fits")
    with pytest.raises(TypeError, match="MaskedImage"):
        write_masked_image(make_exposure(), tmp_path / "x.fits")
    assert isinstance(Mask(np.zeros((2, 2), np.int32)), Mask)


# -- the afw-style methods, once Exposure and MaskedImage delegate to this module -----------------------
@pytest.mark.skipif(not hasattr(Exposure, "writeFits"), reason="Exposure.writeFits not wired in yet")
def test_exposure_methods_delegate(tmp_path):
    exposure = make_exposure(psf=GaussianPsf(3, 3, 1.0))
    path = tmp_path / "m.fits"
    exposure.writeFits(path)
    back = ExposureF.readFits(path)
    assert type(back) is ExposureF and back.getPsf() == exposure.getPsf()
    with pytest.raises(FileExistsError):
        exposure.writeFits(path)
    exposure.writeFits(path, overwrite=True)


@pytest.mark.skipif(not hasattr(MaskedImage, "writeFits"), reason="MaskedImage.writeFits not wired in yet")
def test_masked_image_methods_delegate(tmp_path):
    mi = make_exposure().getMaskedImage()
    path = tmp_path / "mi.fits"
    mi.writeFits(path)
    back = MaskedImageF.readFits(path)
    assert type(back) is MaskedImageF and back.getXY0() == mi.getXY0()


# -- hdu= for files not in the LSST layout ----------------------------------------------------------
@pytest.fixture
def sci_err_dq(tmp_path):
    science = np.arange(12, dtype=np.float32).reshape(3, 4)
    hdus = [fits.PrimaryHDU(), fits.ImageHDU(science, name="SCI"), fits.ImageHDU(science / 10, name="ERR"),
            fits.ImageHDU(np.zeros((3, 4), np.int16), name="DQ"),
            fits.BinTableHDU.from_columns([fits.Column(name="a", format="J", array=[1])], name="TAB")]  # fmt: skip
    path = tmp_path / "sci.fits"
    fits.HDUList(hdus).writeto(path)
    return path, science


@pytest.mark.parametrize("hdu", ["SCI", "sci", 1])
def test_hdu_option_reads_one_image_of_a_sci_err_dq_file(sci_err_dq, hdu):
    path, science = sci_err_dq
    with pytest.raises(FitsFormatError, match=r"named 'SCI', 'ERR', 'DQ', not IMAGE.*hdu=N.*hdu='SCI'"):
        read_exposure(path)
    exposure = read_exposure(path, hdu=hdu)
    np.testing.assert_array_equal(exposure.image.array, science)
    np.testing.assert_array_equal(read_exposure(path, hdu="ERR", lazy=True).image.array.compute(), science / 10)


def test_a_single_named_image_hdu_needs_no_hdu_option(tmp_path):
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(np.ones((2, 3)), name="SCI")]).writeto(tmp_path / "one.fits")
    assert read_exposure(tmp_path / "one.fits").getDimensions() == Extent2I(3, 2)


@pytest.mark.parametrize(
    ("hdu", "error", "match"),
    [
        ("NOPE", FitsFormatError, r"hdu='NOPE': no such HDU; the file has 5: 0 'PRIMARY' \(no pixels\), 1 'SCI'"),
        (7, FitsFormatError, "hdu=7: no such HDU"),
        (0, FitsFormatError, "hdu=0 holds no image pixels"),
        ("TAB", FitsFormatError, r"hdu='TAB' holds no image pixels.*4 'TAB' \(table\)"),
        (1.0, TypeError, "hdu= must be an HDU index"),
        (True, TypeError, "hdu= must be an HDU index"),
    ],
)
def test_hdu_option_errors_name_the_parameter(sci_err_dq, hdu, error, match):
    with pytest.raises(error, match=match):
        read_exposure(sci_err_dq[0], hdu=hdu)


# -- ExposureF from arrays, as a numpy or astropy user builds one -----------------------------------
def test_exposure_from_an_array_with_variance_and_mask(tmp_path):
    image = np.arange(12, dtype=np.float64).reshape(3, 4)
    mask = np.zeros((3, 4), np.uint8)
    mask[1, 2] = 4
    exposure = ExposureF(image, variance=image * 2, mask=mask)
    assert exposure.dtype == np.float32 and exposure.getDimensions() == Extent2I(4, 3)
    np.testing.assert_array_equal(exposure.image.array, image.astype(np.float32))
    np.testing.assert_array_equal(exposure.variance.array, (image * 2).astype(np.float32))
    assert exposure.mask.array.dtype == np.int32 and exposure.mask.array[1, 2] == 4
    assert ExposureF(image, variance=0.25).variance.array.tolist() == [[0.25] * 4] * 3
    assert not ExposureF(image).mask.array.any() and not ExposureF(image).variance.array.any()
    write_exposure(exposure, tmp_path / "a.fits")
    back = read_exposure(tmp_path / "a.fits")
    np.testing.assert_array_equal(back.image.array, exposure.image.array)
    np.testing.assert_array_equal(back.mask.array, exposure.mask.array)


def test_exposure_from_an_array_keeps_or_converts_the_pixel_type():
    same = np.ones((2, 3), np.float32)
    assert ExposureF(same).image.array is same  # wrapped, as numpy.asarray would
    assert ExposureF(same, deep=True).image.array is not same
    assert ExposureD(same).dtype == np.float64 and Exposure(same.astype(np.float64)).dtype == np.float64
    assert Exposure(np.ones((2, 2), np.int16)).dtype == np.float32
    lazy = ExposureF(da.ones((4, 4), chunks=2, dtype=np.float64))
    assert isinstance(lazy.image.array, da.Array) and lazy.dtype == np.float32
    assert ExposureF(same, xy0=Point2I(5, -2)).getXY0() == Point2I(5, -2)
    assert ExposureF(10, 20).getDimensions() == Extent2I(10, 20)  # the LSST constructors still work


@pytest.mark.parametrize(
    ("args", "kwargs", "error", "match"),
    [
        ((np.ones((2, 2)),), {"mask": np.ones((3, 3), np.int32)}, ValueError, "mask= must be an integer array"),
        ((np.ones((2, 2)),), {"mask": np.ones((2, 2))}, ValueError, "mask= must be an integer array"),
        ((np.ones((2, 2)),), {"variance": np.ones(3)}, ValueError, "variance= must have the image's shape"),
        ((np.ones((2, 2)),), {"variance": "x"}, TypeError, "variance= must be an array"),
        ((np.ones(3),), {}, ValueError, "must be 2-d"),
        ((4, 4), {"variance": 1.0}, TypeError, "mask= and variance= go with an image array"),
    ],
)
def test_exposure_from_an_array_errors(args, kwargs, error, match):
    with pytest.raises(error, match=match):
        ExposureF(*args, **kwargs)
