"""Same-host shared memory: a LocalCluster reads the input and writes the output through /dev/shm.

The bits must be those of threads (and of the network path), the pixels must not travel over
the network, nothing may be left in /dev/shm, and a machine without room (or with the feature
turned off) must fall back to the network with the same answer.
"""

# ruff: noqa: D103
from __future__ import annotations

import os
import pickle

import dask
import numpy as np
import pytest
from array_funcs import minus_min_with_holes, smooth
from conftest import make_exposure

import imagemapreduce as imr
from imagemapreduce import map_reduce
from imagemapreduce.builtin_mappers import GaussianSmoothMapper
from imagemapreduce.engine import shared_memory as shm
from imagemapreduce.engine.scheduling import choose_scheduler

pytestmark = pytest.mark.skipif(not os.path.isdir(shm.SHARED_MEMORY_DIR), reason="no POSIX shared memory files")


def _ours() -> set[str]:
    return {name for name in os.listdir(shm.SHARED_MEMORY_DIR) if name.startswith("imr-")}


def planes_of(exposure):
    return [getattr(exposure, p).array.tobytes() for p in ("image", "mask", "variance")]


# -- the pieces -------------------------------------------------------------------------------------


def test_a_segment_holds_an_array_that_a_reference_reads_and_writes_and_is_unlinked_on_close():
    before = _ours()
    with shm.SharedSegment(6 * 4) as segment:
        array = segment.array((2, 3), np.float32)
        array[...] = np.arange(6, dtype=np.float32).reshape(2, 3)
        ref = segment.ref((2, 3), np.float32)
        ref = pickle.loads(pickle.dumps(ref))  # as it travels to a worker
        with ref.open() as seen:
            assert seen.tolist() == [[0, 1, 2], [3, 4, 5]]
            assert not seen.flags.writeable
        with ref.open(writable=True) as written:
            written[1, 2] = 50
        assert array[1, 2] == 50
        assert segment.name in _ours()
        del array
    assert _ours() == before


def test_a_shared_cut_is_a_read_only_copy_that_outlives_its_segment():
    source = np.arange(48, dtype=np.int32).reshape(6, 8)
    with shm.SharedSegment(source.nbytes) as segment:
        segment.array(source.shape, source.dtype)[...] = source
        cut = shm.SharedArrayCut(segment.ref(source.shape, source.dtype), slice(1, 4), slice(2, 7))
        cut = pickle.loads(pickle.dumps(cut))
        pixels = cut.materialize()
    np.testing.assert_array_equal(pixels, source[1:4, 2:7])  # still readable: a copy, not a view
    assert not pixels.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        pixels[0, 0] = 1


def test_a_segment_too_large_for_dev_shm_is_refused_before_anything_is_written():
    free = os.statvfs(shm.SHARED_MEMORY_DIR)
    before = _ours()
    with pytest.raises(OSError, match="too little free space"):
        shm.SharedSegment(free.f_bavail * free.f_frsize + 1)
    assert _ours() == before


def test_a_worker_that_cannot_open_a_segment_says_so():
    assert shm._read_token("imr-no-such-segment", 8) is None


def test_the_dask_config_turns_it_off():
    with dask.config.set({"imagemapreduce.shared-memory": False}):
        assert not shm.shared_memory_enabled()
    assert shm.shared_memory_enabled()


# -- on a LocalCluster ------------------------------------------------------------------------------


def test_local_cluster_workers_pass_the_probe(local_cluster):
    with choose_scheduler(local_cluster) as choice:
        assert choice.same_host_memory()
    with dask.config.set({"imagemapreduce.shared-memory": False}), choose_scheduler(local_cluster) as choice:
        assert not choice.same_host_memory()
    with choose_scheduler("threads") as choice:
        assert not choice.same_host_memory()


@pytest.mark.parametrize(
    ("cell", "border", "reduce"),
    [(32, 4, "copy"), (24, 6, "average"), (40, 5, "sum")],
    ids=["tiling-copy-written-by-cells", "overlapping-average-by-regions", "sum"],
)
def test_map_reduce_on_a_local_cluster_moves_pixels_through_shared_memory_with_the_threads_bits(
    local_cluster, cell, border, reduce
):
    image = np.random.default_rng(21).standard_normal((150, 130)).astype(np.float32)
    kwargs = {"cell_size": cell, "border": border, "reduce": reduce, "func_kwargs": {"sigma": 1.0}}
    if reduce != "copy":
        kwargs["grid_step"] = cell // 2 if reduce == "average" else cell
    expected = map_reduce(image, smooth, scheduler="threads", **kwargs)
    before = _ours()
    for packing in (1, "auto"):
        got = map_reduce(image, smooth, scheduler=local_cluster, cells_per_task=packing, **kwargs)
        assert got.tobytes() == expected.tobytes(), packing
    with dask.config.set({"imagemapreduce.shared-memory": False}):
        network = map_reduce(image, smooth, scheduler=local_cluster, **kwargs)
    assert network.tobytes() == expected.tobytes()
    assert _ours() == before  # every segment unlinked


def test_a_task_on_a_local_cluster_reads_and_writes_exposures_through_shared_memory(local_cluster):
    exposure = make_exposure(160, 130, xy0=(3, 5), seed=12)
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(GaussianSmoothMapper)
    config.cellSizeX = config.cellSizeY = 40
    config.gridStepX = config.gridStepY = 20
    config.borderSizeX = config.borderSizeY = 8
    config.reducer.reduceOperation = "average"
    expected = imr.ImageMapReduceTask(config=config).run(exposure).exposure
    task = imr.ImageMapReduceTask(config=config, scheduler=local_cluster)
    before = _ours()
    got = task.run(exposure).exposure
    assert planes_of(got) == planes_of(expected)
    assert got.mask.getMaskPlaneDict() == expected.mask.getMaskPlaneDict()
    pixels = sum(getattr(exposure, p).array.nbytes for p in ("image", "mask", "variance"))
    meta = task.metadata
    # In once, out once, through shared memory; only cell results between workers and small
    # region reports travel over the network.
    assert meta["bytesSharedMemory"] >= 2 * pixels
    assert meta["bytesScattered"] == 0
    assert meta["bytesGathered"] < pixels / 10
    assert _ours() == before


def test_no_room_in_dev_shm_falls_back_to_the_network_with_the_same_bits(local_cluster, monkeypatch):
    image = np.random.default_rng(22).standard_normal((120, 100)).astype(np.float32)
    kwargs = {"cell_size": 32, "border": 4, "func_kwargs": {"sigma": 1.0}}
    expected = map_reduce(image, smooth, scheduler="threads", **kwargs)
    monkeypatch.setattr(shm, "_HEADROOM", 2**62)  # no segment fits: the probe fails too
    with choose_scheduler(local_cluster) as choice:
        assert not choice.same_host_memory()
    got = map_reduce(image, smooth, scheduler=local_cluster, **kwargs)
    assert got.tobytes() == expected.tobytes()


def test_memmapped_input_is_not_copied_into_shared_memory(local_cluster, tmp_path):
    image = np.lib.format.open_memmap(tmp_path / "image.npy", mode="w+", dtype=np.float32, shape=(96, 80))
    image[...] = np.random.default_rng(23).standard_normal(image.shape)
    with choose_scheduler(local_cluster) as choice:
        assert choice.same_host_memory()
        assert choice._shared_ref(image) is None
        assert choice._shared_ref(np.asarray(image).copy()) is not None
        choice._release_shared_inputs()
    kwargs = {"cell_size": 32, "border": 4, "func_kwargs": {"sigma": 1.0}}
    expected = map_reduce(np.array(image), smooth, scheduler="threads", **kwargs)
    got = map_reduce(image, smooth, scheduler=local_cluster, **kwargs)
    assert got.tobytes() == expected.tobytes()


def test_cells_that_cannot_write_their_cores_are_mended_and_copied_out(local_cluster):
    # Tiling cells whose cores hold NaN do not write them: their regions are stitched afterwards in
    # the client, into the shared output, and copied out from there.
    image = np.random.default_rng(24).standard_normal((100, 90)).astype(np.float32)
    kwargs = {"cell_size": 20, "border": 2, "reduce": "copy"}
    expected = map_reduce(image, minus_min_with_holes, scheduler="threads", **kwargs)
    got = map_reduce(image, minus_min_with_holes, scheduler=local_cluster, **kwargs)
    assert np.isnan(expected).any()
    assert got.tobytes() == expected.tobytes()
