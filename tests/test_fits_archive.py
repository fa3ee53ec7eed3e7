"""Tests for the afw archive of Exposure files: objects carried through, CoaddPsf persisted, contents checked.

The reference for "carried unchanged" is the file itself, read with astropy alone: every archive
object (its class, module and table rows, found through the index) and every primary archive-id card
of the input must be in the output, except the PSF-dependent ones when the PSF changed.
"""

# ruff: noqa: D103

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from astropy.io import fits
from test_fits import make_exposure, real

import imagemapreduce as imr
from imagemapreduce.builtin_mappers import IdentityMapper
from imagemapreduce.geom import Box2I, Extent2I, Point2D
from imagemapreduce.io.fits import FitsFormatError, read_exposure, write_exposure
from imagemapreduce.psf import CoaddPsf, DoubleGaussianPsf, GaussianPsf, WindowedCoaddPsf
from imagemapreduce.weights import Weighting

PSF_DEPENDENT = ("PSF", "AP_CORR_MAP", "SUMMARY_STATS")


def _plain(value):
    values = np.asarray(value).ravel().tolist()
    values = ["NaN" if isinstance(v, float) and v != v else v for v in values]  # NaN equals itself here
    return tuple(values) if np.ndim(value) else values[0]


def archive_of(path):
    """({id: sorted [(name, module, persistable, rows)]}, {primary archive-id key: id}) by astropy alone."""
    with fits.open(path) as hdul:
        primary = hdul[0].header
        keys = {k: v for k, v in primary.items() if k.startswith("ARCHIVE_ID_") or k.endswith("_ID")}
        index_hdu = primary["AR_HDU"] - 1
        catalogs = {h.header["AR_CATN"]: h.data for h in hdul[index_hdu + 1 :]}
        objects = {}
        for row in hdul[index_hdu].data:
            data = catalogs[int(row["cat.archive"])]
            rows = data[int(row["row0"]) : int(row["row0"]) + int(row["nrows"])]
            entry = (row["name"].strip(), row["module"].strip(), int(row["cat.persistable"]),
                     [tuple(_plain(v) for v in r) for r in rows])  # fmt: skip
            objects.setdefault(int(row["id"]), []).append(entry)
    return {k: sorted(v, key=lambda e: e[2]) for k, v in objects.items()}, keys


def component(key):
    return key[len("ARCHIVE_ID_") :] if key.startswith("ARCHIVE_ID_") else key[: -len("_ID")]


def assert_carried(source, written, dropped=()):
    """Every object and key of ``source`` not of a ``dropped`` component is in ``written``, unchanged."""
    before, before_keys = archive_of(source)
    after, after_keys = archive_of(written)
    kept_keys = {k: v for k, v in before_keys.items() if component(k) not in dropped}
    assert kept_keys and {k: after_keys.get(k) for k in kept_keys} == kept_keys
    gone = {v for k, v in before_keys.items() if component(k) in dropped} - set(kept_keys.values())
    expected = {i: o for i, o in before.items() if i not in gone}
    assert {i: after.get(i) for i in expected} == expected
    for key in before_keys:
        if component(key) in dropped and component(key) != "PSF":
            assert key not in after_keys  # a PSF-dependent object of the old PSF is not kept
    return after, after_keys


def assert_same_kernels(psf, other, positions):
    assert type(other) is type(psf)
    for x, y in positions:
        np.testing.assert_array_equal(
            other.computeKernelImage(Point2D(x, y)).array, psf.computeKernelImage(Point2D(x, y)).array
        )


@pytest.mark.parametrize(
    "name", ["obs_base_calexp.fits", "exposure-version-2.fits", "obs_base_small.fits", "pipe_tasks_coadd_v1.fits"]
)
def test_round_trip_carries_every_archive_object_and_key(name, tmp_path):
    source = real(name)
    exposure = read_exposure(source)
    write_exposure(exposure, tmp_path / "copy.fits")
    assert_carried(source, tmp_path / "copy.fits")  # the PSF did not change: everything is kept
    again = read_exposure(tmp_path / "copy.fits")
    assert again.getPsf() == exposure.getPsf()
    write_exposure(again, tmp_path / "copy2.fits")  # read, write, read, write: still all there
    assert_carried(source, tmp_path / "copy2.fits")


def _coadd_psf(exposure, windowed=False):
    box = exposure.getBBox()
    half = Box2I(box.getBegin(), Extent2I(box.getWidth() // 2 + 3, box.getHeight()))
    components = [(GaussianPsf(11, 11, 1.5), box, 1.0), (DoubleGaussianPsf(9, 13, 1.0, 2.5, 0.2), half, 0.5)]
    if windowed:
        return WindowedCoaddPsf(components, Weighting("cosine"))
    return CoaddPsf(components)


@pytest.mark.parametrize("windowed", [False, True])
@pytest.mark.parametrize("name", ["obs_base_calexp.fits", "exposure-version-2.fits"])
def test_new_coadd_psf_replaces_the_psf_and_the_rest_is_carried(name, windowed, tmp_path):
    source = real(name)
    exposure = read_exposure(source)
    psf = _coadd_psf(exposure, windowed)
    exposure.setPsf(psf)
    write_exposure(exposure, tmp_path / "coadd.fits")
    after, keys = assert_carried(source, tmp_path / "coadd.fits", dropped=PSF_DEPENDENT)
    assert keys["PSF_ID"] == keys["ARCHIVE_ID_PSF"]
    assert after[keys["PSF_ID"]][0][0] == type(psf).__name__
    back = read_exposure(tmp_path / "coadd.fits")
    assert back.getPsf() == psf
    box = exposure.getBBox()
    assert_same_kernels(psf, back.getPsf(), [(box.getMinX(), box.getMinY()), (box.getMaxX(), box.getMaxY()),
                                             (box.getMinX() + 2.3, box.getMaxY() - 1.6)])  # fmt: skip
    rows = after[keys["PSF_ID"]][1][3]
    if "ARCHIVE_ID_SKYWCS" in keys:  # components are in coadd pixels: their WCS is the coadd's own
        assert {row[0] for row in rows} == {keys["ARCHIVE_ID_SKYWCS"]}


def test_coadd_psf_layout_follows_meas_algorithms(tmp_path):
    psf = _coadd_psf(make_exposure(xy0=(0, 0), shape=(30, 40)))
    write_exposure(make_exposure(xy0=(0, 0), shape=(30, 40), psf=psf), tmp_path / "c.fits")
    with fits.open(tmp_path / "c.fits", lazy_load_hdus=False) as hdul:
        tables = [(h.header["AR_CATN"], h.columns.names, np.array(h.data)) for h in hdul[5:]
                  if h.header.get("AR_NAME") == "CoaddPsf"]  # fmt: skip
        index = np.array(hdul[4].data)
    (_, names1, first), (_, names2, second) = sorted(tables, key=lambda t: t[0])
    assert names1 == ["coaddwcs", "cachesize", "avgpos_x", "avgpos_y", "warpingkernelname"]
    assert names2[:9] == ["wcs", "psf", "photoCalib", "apCorrMap", "validPolygon", "visitInfo",
                          "transmissionCurve", "detector", "id"]  # fmt: skip
    assert names2[9:] == ["bbox_min_x", "bbox_min_y", "bbox_max_x", "bbox_max_y", "weight"]
    average = psf.getAveragePosition()
    assert (first["avgpos_x"][0], first["avgpos_y"][0]) == (average.x, average.y)
    np.testing.assert_array_equal(second["weight"], [1.0, 0.5])
    coadd_rows = index[np.char.strip(index["name"].astype(str)) == "CoaddPsf"]
    assert sorted(coadd_rows["cat.persistable"]) == [0, 1] and set(coadd_rows["id"]) == {1}


def test_task_run_output_keeps_the_archive_and_its_coadd_psf(tmp_path):
    source = real("obs_base_calexp.fits")
    exposure = read_exposure(source)
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(IdentityMapper)
    config.reducer.reduceOperation = "average"
    config.scheduler = "synchronous"
    for field, value in dict(scaleByFwhm=False, cellSizeX=16, cellSizeY=16, gridStepX=12, gridStepY=12,
                             borderSizeX=2, borderSizeY=2, adjustGridOption="none").items():  # fmt: skip
        setattr(config, field, value)
    out = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    assert isinstance(out.getPsf(), CoaddPsf)
    imr.write_exposure(out, tmp_path / "out.fits")
    assert_carried(source, tmp_path / "out.fits", dropped=PSF_DEPENDENT)
    back = imr.read_exposure(tmp_path / "out.fits")
    np.testing.assert_array_equal(back.image.array, out.image.array)
    assert_same_kernels(out.getPsf(), back.getPsf(), [(0, 0), (63, 31), (20.4, 13.7)])


def test_pickled_archive_travels_light_and_is_not_written(tmp_path, caplog):
    exposure = read_exposure(real("obs_base_calexp.fits"))
    archive = exposure.getMetadata()["afw.archive"]
    assert len(pickle.dumps(archive)) < 2000 < sum(h.data.nbytes for h in archive.catalogs)
    copy = pickle.loads(pickle.dumps(exposure.clone()))
    with caplog.at_level(logging.WARNING, logger="imagemapreduce.io"):
        write_exposure(copy, tmp_path / "copy.fits")
    assert "another process" in caplog.text
    assert archive_of(tmp_path / "copy.fits")[1] == {"PSF_ID": 1, "ARCHIVE_ID_PSF": 1}


def _edit_index(source, target, column, value):
    with fits.open(source) as hdul:
        hdul[4].data[column][3] = value
        hdul.writeto(target)


@pytest.mark.parametrize(
    ("column", "value", "match"),
    [("cat.archive", 99, "points to catalog 99"), ("row0", 5000, "claims rows 5000"), ("id", 0, "ids are > 0")],
)
def test_inconsistent_archive_index_raises(column, value, match, tmp_path):
    _edit_index(real("exposure-version-2.fits"), tmp_path / "bad.fits", column, value)
    with pytest.raises(FitsFormatError, match=match):
        read_exposure(tmp_path / "bad.fits")


def test_primary_id_missing_from_the_index_raises(tmp_path):
    with fits.open(real("exposure-version-2.fits")) as hdul:
        hdul[0].header["ARCHIVE_ID_FILTER"] = 777
        hdul.writeto(tmp_path / "bad.fits")
    with pytest.raises(FitsFormatError, match="ARCHIVE_ID_FILTER = 777"):
        read_exposure(tmp_path / "bad.fits")


@pytest.mark.parametrize(("column", "value", "match"), [("weight", np.nan, "non-finite"), ("psf", 999, "999")])
def test_bad_coadd_psf_table_raises(column, value, match, tmp_path):
    exposure = make_exposure(psf=_coadd_psf(make_exposure()))
    write_exposure(exposure, tmp_path / "c.fits")
    with fits.open(tmp_path / "c.fits") as hdul:
        table = next(h for h in hdul[5:] if h.header.get("AR_NAME") == "CoaddPsf" and column in h.columns.names)
        table.data[column][0] = value
        hdul.writeto(tmp_path / "bad.fits")
    with pytest.raises(FitsFormatError, match=match):
        read_exposure(tmp_path / "bad.fits")


def test_afw_coadd_psf_with_warped_inputs_is_not_read_but_is_carried(tmp_path, caplog):
    source = real("obs_base_calexp.fits")
    exposure = read_exposure(source)
    exposure.setPsf(_coadd_psf(exposure))
    write_exposure(exposure, tmp_path / "coadd.fits")
    with fits.open(tmp_path / "coadd.fits") as hdul:  # as afw writes a real coadd: inputs with their own WCS
        table = next(h for h in hdul[5:] if h.header.get("AR_NAME") == "CoaddPsf" and "wcs" in h.columns.names)
        table.data["wcs"][:] = 3
        hdul.writeto(tmp_path / "afw.fits")
    with caplog.at_level(logging.WARNING, logger="imagemapreduce.io"):
        afw = read_exposure(tmp_path / "afw.fits")
    assert afw.getPsf() is None and "WCSes other than the coadd's" in caplog.text
    write_exposure(afw, tmp_path / "again.fits")  # the PSF was not replaced: its tables are carried as they are
    assert_carried(tmp_path / "afw.fits", tmp_path / "again.fits")


# -- our PSF models, written as their plain-data documents ----------------------------------------
def _our_psfs():
    from imagemapreduce.psf import EllipticalGaussianPsf, KolmogorovPsf, MoffatPsf
    from imagemapreduce.psfmatch import field_psf

    bbox = Box2I(imr.Point2I(0, 0), Extent2I(64, 48))
    left = Box2I(imr.Point2I(0, 0), Extent2I(32, 48))
    right = Box2I(imr.Point2I(32, 0), Extent2I(32, 48))
    return {
        "moffat": MoffatPsf(21, 21, 3.0, beta=2.5, g1=0.02),
        "elliptical gaussian": EllipticalGaussianPsf(21, 21, 2.0, g2=0.03),
        "kolmogorov": KolmogorovPsf(21, 21, 3.1),
        "varying moffat": field_psf(bbox, "moffat", 2.5, 4.5, g_max=0.04),
        "varying kolmogorov": field_psf(bbox, "kolmogorov", 2.5, 4.5, g_max=0.03),
        "coadd of ours": CoaddPsf(
            [(MoffatPsf(21, 21, 3.0), left, 1.0), (EllipticalGaussianPsf(21, 21, 2.0), right, 2.0)]
        ),
    }


@pytest.mark.parametrize("name", list(_our_psfs()))
def test_our_psf_models_round_trip_through_the_archive(tmp_path, caplog, name):
    psf = _our_psfs()[name]
    exposure = make_exposure()
    exposure.setPsf(psf)
    path = tmp_path / "psf.fits"
    with caplog.at_level(logging.WARNING):
        write_exposure(exposure, path)
    assert "cannot be persisted" not in caplog.text
    back = read_exposure(path).getPsf()
    assert type(back) is type(psf)
    for position in (Point2D(3.0, 4.0), Point2D(40.5, 30.25)):
        np.testing.assert_array_equal(back.computeKernelImage(position).array, psf.computeKernelImage(position).array)
    with fits.open(path) as hdul:
        assert fits.getval(path, "PSF_ID") > 0
        assert any(h.header.get("AR_NAME") == type(psf).__name__ for h in hdul[1:])


def test_a_tampered_psf_document_is_refused_naming_what_is_wrong(tmp_path):
    from imagemapreduce.psf import MoffatPsf

    exposure = make_exposure()
    exposure.setPsf(MoffatPsf(21, 21, 3.0))
    path = tmp_path / "psf.fits"
    write_exposure(exposure, path)
    with fits.open(path, mode="update") as hdul:
        (table,) = [h for h in hdul[1:] if h.header.get("AR_NAME") == "MoffatPsf"]
        table.data["document"][0] = '{"type": "MoffatPsf", "width": 21}'
    with pytest.raises(FitsFormatError, match="MoffatPsf"):
        read_exposure(path)
    with fits.open(path, mode="update") as hdul:
        (table,) = [h for h in hdul[1:] if h.header.get("AR_NAME") == "MoffatPsf"]
        table.data["document"][0] = "not json at all"
    with pytest.raises(FitsFormatError, match="not JSON"):
        read_exposure(path)


def test_a_homogenised_exposure_keeps_its_target_psf_in_fits(tmp_path):
    from imagemapreduce.psfmatch import PsfMatchMapper, field_psf, simulate_exposure

    bbox = Box2I(imr.Point2I(0, 0), Extent2I(128, 128))
    exposure, _ = simulate_exposure(128, 128, psf=field_psf(bbox, "moffat", 2.5, 3.5), n_stars=10, seed=1)
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(PsfMatchMapper)
    config.reducer.reduceOperation = "average"
    config.cellSizeX = config.cellSizeY = 64
    config.borderSizeX = config.borderSizeY = 12
    config.scaleByFwhm = False
    output = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    path = tmp_path / "matched.fits"
    write_exposure(output, path)
    back = read_exposure(path).getPsf()
    assert back is not None and type(back) is type(output.getPsf())
    for position in (Point2D(20.0, 20.0), Point2D(100.0, 64.0)):
        np.testing.assert_array_equal(
            back.computeKernelImage(position).array, output.getPsf().computeKernelImage(position).array
        )
