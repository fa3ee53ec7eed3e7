"""Object storage: zarr (and FITS) at fsspec URLs, against a real S3 endpoint served here on 127.0.0.1.

The endpoint is moto's server mode, started by this module on a free port of 127.0.0.1 and
stopped after it; s3fs talks to it over HTTP, as it would to AWS. Nothing else is contacted.
"""

# ruff: noqa: D103
from __future__ import annotations

import json
import pickle
import time

import numpy as np
import pytest
from cell_mappers import CentreValueMapper, InterruptibleMapper
from conftest import make_exposure
from test_zarr import config_for

import imagemapreduce as imr
from imagemapreduce.cli import main
from imagemapreduce.io import (
    StoreBusyError,
    open_zarr_exposure,
    read_exposure,
    read_exposure_url,
    verify_zarr_store,
    write_exposure,
    write_zarr_exposure,
)
from imagemapreduce.io.locations import StoreLocation
from imagemapreduce.io.zarr_lock import LEASE_NAME, LeaseLock
from imagemapreduce.io.zarr_regions import ZarrRegionWriter

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "imr-test"
KEYS = {"key": "testing", "secret": "testing"}


@pytest.fixture(scope="module")
def endpoint():
    """An S3 endpoint on 127.0.0.1 (moto's server mode) with one bucket; stopped after the module."""
    import boto3

    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    assert host == "127.0.0.1"
    client = boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")  # fmt: skip
    client.create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture
def options(endpoint):
    return {**KEYS, "endpoint_url": endpoint, "client_kwargs": {"region_name": "us-east-1"}}


@pytest.fixture
def prefix(request):
    """A fresh key prefix in the bucket for each test."""
    return f"s3://{BUCKET}/{request.node.name.replace('[', '-').replace(']', '')}-{time.monotonic_ns()}"


def planes_of(exposure):
    return [np.asarray(getattr(exposure, p).array).tobytes() for p in ("image", "mask", "variance")]


def object_keys(options, url):
    location = StoreLocation(url, options)
    location.fs.invalidate_cache()
    return {key[len(location.root) + 1 :] for key in location.fs.find(location.root)}


def reference(config, exposure, **kwargs):
    return imr.ImageMapReduceTask(config=config).run(exposure, **kwargs).exposure


# -- write and open --------------------------------------------------------------------------------------
def test_round_trip_through_s3_is_lazy_and_bitwise(options, prefix):
    exposure = make_exposure(130, 90, xy0=(5, -7), seed=11)
    url = f"{prefix}/in.zarr"
    assert write_zarr_exposure(exposure, url, storage_options=options, chunks=40) == url
    keys = object_keys(options, url)
    assert {"zarr.json", "image/zarr.json", "image/c/0/0", "image/c/2/3", "mask/c/2/3"} <= keys
    lazy = open_zarr_exposure(url, storage_options=options)
    assert planes_of(lazy) == planes_of(exposure)
    assert lazy.getXY0() == exposure.getXY0() and lazy.getPsf() == exposure.getPsf()
    assert lazy.mask.getMaskPlaneDict() == exposure.mask.getMaskPlaneDict()
    graph = pickle.dumps(dict(lazy.image.array.__dask_graph__()))
    assert len(graph) < exposure.image.array.nbytes / 5, "the graph carries the URL, not the pixels"
    assert verify_zarr_store(url, storage_options=options).ok
    with pytest.raises(FileExistsError, match="overwrite=True"):
        write_zarr_exposure(exposure, url, storage_options=options)


def test_credentials_and_endpoint_from_the_environment(endpoint, prefix, monkeypatch):
    import s3fs

    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_ENDPOINT_URL": endpoint, "AWS_DEFAULT_REGION": "us-east-1"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    s3fs.S3FileSystem.clear_instance_cache()
    exposure = make_exposure(40, 30, seed=2)
    write_zarr_exposure(exposure, f"{prefix}/env.zarr")
    assert planes_of(open_zarr_exposure(f"{prefix}/env.zarr")) == planes_of(exposure)
    s3fs.S3FileSystem.clear_instance_cache()


def test_storage_options_for_a_local_path_are_refused(tmp_path, options):
    with pytest.raises(ValueError, match="storage_options apply to object storage URLs"):
        write_zarr_exposure(make_exposure(20, 20), tmp_path / "x.zarr", storage_options=options)


@pytest.mark.parametrize("scheme", ["memory", "file"])
def test_memory_and_file_urls(tmp_path, scheme):
    exposure = make_exposure(90, 70, seed=8)
    url = f"memory://imr-{time.monotonic_ns()}" if scheme == "memory" else f"file://{tmp_path}"
    write_zarr_exposure(exposure, f"{url}/in.zarr", chunks=32)
    lazy = open_zarr_exposure(f"{url}/in.zarr")
    assert planes_of(lazy) == planes_of(exposure)
    config = config_for(CentreValueMapper, "threads", region=40)
    result = imr.ImageMapReduceTask(config=config).runToZarr(lazy, f"{url}/out.zarr")
    assert planes_of(result.exposure) == planes_of(reference(config, exposure))
    assert verify_zarr_store(f"{url}/out.zarr").ok
    if scheme == "file":  # a file:// URL is a local store: the same files, the same flock
        assert (tmp_path / "out.zarr" / ".imagemapreduce-writer.lock").is_file()


# -- runToZarr on S3 ---------------------------------------------------------------------------------------
def test_run_to_s3_equals_the_in_memory_run_and_verifies(options, prefix):
    exposure = make_exposure(130, 100, xy0=(3, 4), seed=6)
    write_zarr_exposure(exposure, f"{prefix}/in.zarr", storage_options=options, chunks=40)
    source = open_zarr_exposure(f"{prefix}/in.zarr", storage_options=options)
    config = config_for(CentreValueMapper, "threads", region=40)
    config.reducer.reduceOperation = "average"
    out = f"{prefix}/out.zarr"
    result = imr.ImageMapReduceTask(config=config).runToZarr(source, out, storage_options=options)
    expected = reference(config, exposure)
    assert planes_of(result.exposure) == planes_of(expected)
    assert result.exposure.getPsf() == expected.getPsf()
    assert result.path == out and verify_zarr_store(out, storage_options=options).ok
    assert LEASE_NAME not in object_keys(options, out), "the lease is given back when the run ends"
    again = imr.ImageMapReduceTask(config=config).runToZarr(source, out, storage_options=options, resume=True)
    assert again.regionsWritten == 0 and again.regionsReused == 12


@pytest.mark.slow  # covered by the faster local/zarr and S3 cases; run with --runslow
def test_resume_on_s3_after_an_interrupted_run(options, prefix):
    exposure = make_exposure(130, 100, seed=6)
    out = f"{prefix}/out.zarr"
    config = config_for(InterruptibleMapper, "synchronous", region=40, cellsPerTask=1)
    expected = reference(config, exposure)
    total = len(imr.ImageMapReduceTask(config=config)._currentGrid(exposure))
    InterruptibleMapper.LIMIT.update(calls=total * 2 // 3, done=0)
    try:
        with pytest.raises(KeyboardInterrupt):
            imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options)
    finally:
        InterruptibleMapper.LIMIT.update(calls=None, done=0)
    writer = ZarrRegionWriter(out, exposure.getBBox(), 40, storage_options=options)
    done = len(writer.flagged_regions())
    assert 0 < done < 12, f"{done} of 12 regions written before the crash"
    assert not verify_zarr_store(out, storage_options=options).ok
    resumed = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options, resume=True)
    assert resumed.regionsReused == done and resumed.regionsWritten == 12 - done
    assert planes_of(resumed.exposure) == planes_of(expected)
    assert resumed.exposure.getPsf() == expected.getPsf()
    assert verify_zarr_store(out, storage_options=options).ok


@pytest.mark.slow  # covered by the faster local/zarr and S3 cases; run with --runslow
def test_a_region_changed_on_s3_is_recomputed_on_resume(options, prefix):
    exposure = make_exposure(90, 70, seed=4)
    out = f"{prefix}/out.zarr"
    config = config_for(CentreValueMapper, "synchronous", region=40)
    imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options)
    StoreLocation(out, options).open_group("r+")["image"][45, 50] = -1.0
    verification = verify_zarr_store(out, storage_options=options)
    assert not verification.ok and "region (1, 1)" in str(verification)
    resumed = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options, resume=True)
    assert resumed.regionsRepaired == [(1, 1)] and resumed.regionsWritten == 1
    assert planes_of(resumed.exposure) == planes_of(reference(config, exposure))


def test_the_output_that_is_the_input_is_refused_on_s3(options, prefix):
    exposure = make_exposure(60, 50, seed=1)
    url = f"{prefix}/in.zarr"
    write_zarr_exposure(exposure, url, storage_options=options)
    task = imr.ImageMapReduceTask(config=config_for(CentreValueMapper, "synchronous", region=40))
    for target, mode in ((url, "overwrite"), (url + "/", "resume"), (prefix, "overwrite")):
        with pytest.raises(ValueError, match="is the zarr store the input is read from"):
            task.runToZarr(open_zarr_exposure(url, storage_options=options), target, storage_options=options,
                           **{mode: True})  # fmt: skip
    assert planes_of(open_zarr_exposure(url, storage_options=options)) == planes_of(exposure)


# -- one writer: the lease ---------------------------------------------------------------------------------
def test_a_live_lease_refuses_a_second_writer_and_is_exclusive(options, prefix):
    exposure = make_exposure(90, 70, seed=3)
    out = f"{prefix}/out.zarr"
    config = config_for(CentreValueMapper, "synchronous", region=40)
    imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options)
    first, second = LeaseLock(StoreLocation(out, options)), LeaseLock(StoreLocation(out, options))
    first.acquire()
    try:
        with pytest.raises(StoreBusyError, match="is being written by pid"):
            second.acquire()
        for mode in ("overwrite", "resume"):
            with pytest.raises(StoreBusyError, match="is being written"):
                imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options,
                                                                **{mode: True})  # fmt: skip
    finally:
        first.release()
    assert LEASE_NAME not in object_keys(options, out)
    assert imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options,
                                                           resume=True).regionsWritten == 0  # fmt: skip


@pytest.mark.slow  # covered by the faster local/zarr and S3 cases; run with --runslow
def test_the_lease_of_a_dead_writer_expires(options, prefix):
    exposure = make_exposure(60, 50, seed=3)
    out = f"{prefix}/out.zarr"
    config = config_for(CentreValueMapper, "synchronous", region=40)
    imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options)
    location = StoreLocation(out, options)
    dead = {"token": "dead", "holder": "pid 1 on gone since then", "expires": time.time() - 1}
    location.fs.pipe_file(location.child(LEASE_NAME), json.dumps(dead).encode())
    result = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options, resume=True)
    assert result.regionsWritten == 0
    assert LEASE_NAME not in object_keys(options, out)


def test_the_lease_is_renewed_while_held(options, prefix):
    location = StoreLocation(f"{prefix}/lease", options)
    lock = LeaseLock(location, ttl=0.4)
    lock.acquire()
    try:
        first = json.loads(location.fs.cat_file(location.child(LEASE_NAME)))["expires"]
        time.sleep(0.5)  # longer than the lease: only a renewal keeps it valid
        location.fs.invalidate_cache()
        renewed = json.loads(location.fs.cat_file(location.child(LEASE_NAME)))
        assert renewed["token"] == lock.token and renewed["expires"] > first
        with pytest.raises(StoreBusyError):
            LeaseLock(location, ttl=0.4).acquire()
    finally:
        lock.release()


def test_the_writer_pickles_small_without_handles(options, prefix):
    writer = ZarrRegionWriter(f"{prefix}/w.zarr", imr.Box2I(imr.Point2I(0, 0), imr.Extent2I(100, 80)), 40,
                              storage_options=options)  # fmt: skip
    writer.create(np.float32, {}, {}, overwrite=False)
    try:
        writer.flagged_regions()  # opens the group in this process
        data = pickle.dumps(writer)
        assert len(data) < 2000
        clone = pickle.loads(data)
        assert clone._group is None and clone._lock is None and clone.location._fs is None
        assert clone.token == writer.token and clone.location.storage_options == options
    finally:
        writer.release()


# -- chunks and shards -------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("chunks", "shards", "message"),
    [
        (30, None, r"chunks=\(30, 30\) does not divide the output regions of 40 px"),
        (20, 60, r"shards=\(60, 60\) does not divide the output regions of 40 px"),
        (15, 40, r"shards=\(40, 40\) is not a whole number of chunks=\(15, 15\)"),
        ((40, 0), None, "chunks must be a positive int"),
    ],
)
def test_chunks_that_straddle_regions_are_refused_before_work(options, prefix, chunks, shards, message):
    config = config_for(CentreValueMapper, "synchronous", region=40)
    out = f"{prefix}/out.zarr"
    with pytest.raises(ValueError, match=message):
        imr.ImageMapReduceTask(config=config).runToZarr(make_exposure(90, 70), out, storage_options=options,
                                                        chunks=chunks, shards=shards)  # fmt: skip
    assert not StoreLocation(out, options).exists()


@pytest.mark.slow  # covered by the faster local/zarr and S3 cases; run with --runslow
def test_sharded_output_on_s3_writes_one_object_per_region(options, prefix):
    exposure = make_exposure(90, 70, seed=9)
    out = f"{prefix}/out.zarr"
    config = config_for(CentreValueMapper, "threads", region=40)
    result = imr.ImageMapReduceTask(config=config).runToZarr(exposure, out, storage_options=options, chunks=20,
                                                             shards=40)  # fmt: skip
    assert planes_of(result.exposure) == planes_of(reference(config, exposure))
    image = StoreLocation(out, options).open_group("r")["image"]
    assert image.chunks == (20, 20) and image.shards == (40, 40)
    assert {k for k in object_keys(options, out) if k.startswith("image/c/")} == {
        f"image/c/{i}/{j}" for i in range(2) for j in range(3)
    }


def test_a_dask_plane_is_written_on_the_store_chunks(options, prefix):
    import dask.array as da

    exposure = make_exposure(100, 80, seed=12)
    lazy = imr.ExposureF.from_arrays(*(da.from_array(getattr(exposure, p).array, chunks=(33, 27))
                                       for p in ("image", "mask", "variance")))  # fmt: skip
    url = f"{prefix}/in.zarr"
    write_zarr_exposure(lazy, url, storage_options=options, chunks=40)
    assert planes_of(open_zarr_exposure(url, storage_options=options))[0] == planes_of(exposure)[0]


# -- FITS from a URL -----------------------------------------------------------------------------------------
def test_fits_input_from_s3(options, prefix, tmp_path):
    exposure = make_exposure(60, 40, xy0=(2, 3), seed=5)
    local = tmp_path / "in.fits"
    write_exposure(exposure, local)
    StoreLocation(prefix, options).fs.put_file(str(local), f"{prefix}/in.fits")
    remote = read_exposure_url(f"{prefix}/in.fits", storage_options=options)
    assert planes_of(remote) == planes_of(read_exposure(local))
    assert remote.getPsf() == exposure.getPsf() and remote.getXY0() == exposure.getXY0()
    with pytest.raises(ValueError, match="is read whole"):
        read_exposure_url(f"{prefix}/in.fits", storage_options=options, lazy=True)


# -- the command line ----------------------------------------------------------------------------------------
def test_cli_reads_and_writes_s3_with_storage_options(options, prefix, endpoint, tmp_path, capsys):
    exposure = make_exposure(90, 70, seed=7)
    write_zarr_exposure(exposure, f"{prefix}/in.zarr", storage_options=options)
    pairs = ["key=testing", "secret=testing", f"endpoint_url={endpoint}", "client_kwargs.region_name=us-east-1"]
    flags = [flag for pair in pairs for flag in ("--storage-option", pair)]
    run = ["run", f"{prefix}/in.zarr", f"{prefix}/out.zarr", "--mapper", "gaussian", "--mapper-option", "sigma=1.5",
           "--cell-size", "30", "--border", "8", "--region-size", "40", "--no-progress", *flags]  # fmt: skip
    assert main(run) == 0
    local = tmp_path / "out.zarr"
    assert main([*run[:2], str(local), *run[3:]]) == 0
    assert planes_of(open_zarr_exposure(f"{prefix}/out.zarr", storage_options=options)) == planes_of(
        open_zarr_exposure(local)
    )
    assert main(run) == 2 and "already exists" in capsys.readouterr().err
    assert main([*run, "--resume"]) == 0
    assert main(["verify", f"{prefix}/out.zarr", *flags]) == 0
    assert "OK" in capsys.readouterr().out
    assert main(["verify", f"{prefix}/nothing.zarr", *flags]) == 2


# -- a cluster whose workers read and write S3 themselves -----------------------------------------------------
def _worker_s3_clients():
    import s3fs

    return len(s3fs.S3FileSystem._cache)


def test_cluster_workers_read_and_write_s3_themselves(options, prefix, local_cluster):
    import s3fs

    exposure = make_exposure(170, 130, xy0=(11, -4), seed=21)
    write_zarr_exposure(exposure, f"{prefix}/in.zarr", storage_options=options, chunks=40)
    source = open_zarr_exposure(f"{prefix}/in.zarr", storage_options=options)
    config = config_for(CentreValueMapper, local_cluster.scheduler.address, region=48)
    expected = reference(config_for(CentreValueMapper, "threads", region=48), exposure)
    s3fs.S3FileSystem.clear_instance_cache()
    local_cluster.run(s3fs.S3FileSystem.clear_instance_cache)
    out = f"{prefix}/out.zarr"
    result = imr.ImageMapReduceTask(config=config).runToZarr(source, out, storage_options=options)
    assert planes_of(result.exposure) == planes_of(expected)
    assert verify_zarr_store(out, storage_options=options).ok
    clients = local_cluster.run(_worker_s3_clients)
    assert len(clients) == 2 and all(n >= 1 for n in clients.values()), f"S3 clients on the workers: {clients}"


# -- catalogs --------------------------------------------------------------------------------------------
def test_parquet_catalog_on_s3_resumes_and_reads_back(options, prefix):
    from imagemapreduce.detect import DetectMapper
    from imagemapreduce.io import open_catalog, read_catalog
    from imagemapreduce.psf import GaussianPsf

    exposure, _ = imr.psfmatch.simulate_exposure(192, 160, psf=GaussianPsf(25, 25, 1.5), n_stars=50, seed=2, sky=0.0,
                                        n_saturated=0, bad_column=False)  # fmt: skip
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(DetectMapper)
    config.mapper.sigma = 1.5
    config.reducer.reduceOperation = "catalog"
    config.scaleByFwhm = False
    config.cellSizeX = config.cellSizeY = 48
    config.borderSizeX = config.borderSizeY = 16
    config.stitchRegionSize = 96
    expected = imr.ImageMapReduceTask(config=config).run(exposure).catalog
    url = f"{prefix}/catalog.parquet"
    result = imr.ImageMapReduceTask(config=config).runToParquet(exposure, url, storage_options=options)
    assert result.partsWritten == 4 and result.rows == len(expected) > 20
    assert {"_imagemapreduce.json", "part-000000.parquet", "part-000003.json"} <= object_keys(options, url)
    location = StoreLocation(url, options)
    location.fs.rm(location.child("part-000002.json"))
    again = imr.ImageMapReduceTask(config=config).runToParquet(exposure, url, storage_options=options, resume=True)
    assert again.partsWritten == 1 and again.partsReused == 3 and again.partsRepaired == [2]
    catalog = read_catalog(url, storage_options=options)
    for table in (catalog, expected):
        table.sort(["peak_y", "peak_x"])
    for column in expected.colnames:
        assert np.array_equal(catalog[column], expected[column], equal_nan=True), column
    assert len(open_catalog(url, storage_options=options).compute()) == len(expected)
