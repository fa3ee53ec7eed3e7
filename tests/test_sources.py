"""Where cells get their pixels: deferred cuts of in-memory planes, block tasks of Dask planes."""

from __future__ import annotations

import gc
import pickle

import dask
import dask.array as da
import numpy as np
import pytest
from dask.core import get_dependencies

import imagemapreduce as imr
from imagemapreduce._gc_pause import builds_graph, gc_paused
from imagemapreduce.engine.sources import ArrayCut, PlaneSource, materialize

BOXES = np.array([[0, 0, 9, 4], [10, 0, 19, 4], [3, 2, 12, 11]])  # (minX, minY, maxX, maxY)


def _image():
    return np.arange(12 * 20, dtype=np.float32).reshape(12, 20)


def test_array_cuts_become_read_only_views_of_their_box():
    image = _image()
    cuts = PlaneSource(image, imr.Point2I(0, 0)).cell_cuts(BOXES)
    assert all(isinstance(c, ArrayCut) for c in cuts)
    view = materialize(cuts[2])
    np.testing.assert_array_equal(view, image[2:12, 3:13])
    assert np.shares_memory(view, image) and not view.flags.writeable
    assert image.flags.writeable


def test_array_cuts_honour_the_plane_origin():
    image = _image()
    cuts = PlaneSource(image, imr.Point2I(100, 50)).cell_cuts(BOXES + [100, 50, 100, 50])
    np.testing.assert_array_equal(materialize(cuts[1]), image[0:5, 10:20])


def test_an_array_cut_pickles_as_its_pixels_alone():
    image = np.zeros((1000, 1000), np.float64)
    cut = PlaneSource(image, imr.Point2I(0, 0)).cell_cuts(np.array([[0, 0, 9, 9]]))[0]
    payload = pickle.dumps(cut)
    assert len(payload) < 10 * 10 * 8 + 1000  # the 10x10 box, not the 8 MB image
    np.testing.assert_array_equal(pickle.loads(payload), np.zeros((10, 10)))


def test_dask_planes_give_tasks_reading_only_the_blocks_of_each_box():
    image = _image()
    source = PlaneSource(da.from_array(image, chunks=(5, 7)), imr.Point2I(0, 0))
    graph = source.graph()
    keys = [("cut", number) for number in range(len(BOXES))]
    graph.update(zip(keys, source.cell_cuts(BOXES)))
    for (x0, y0, x1, y1), key, cut in zip(BOXES, keys, dask.get(graph, keys)):
        np.testing.assert_array_equal(cut, image[y0 : y1 + 1, x0 : x1 + 1])
        blocks = {(i, j) for i in range(y0 // 5, y1 // 5 + 1) for j in range(x0 // 7, x1 // 7 + 1)}
        assert get_dependencies(graph, key) == {(source.array.name, i, j) for i, j in blocks}


def test_gc_paused_restores_the_collector_and_nests():
    assert gc.isenabled()
    with gc_paused():
        assert not gc.isenabled()
        with gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # only the outermost block turns it back on
    assert gc.isenabled()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_gc_stays_off_if_it_was_off():
    gc.disable()
    try:
        with gc_paused():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_builds_graph_keeps_the_function():
    @builds_graph
    def build(n):
        """Build n things."""
        assert not gc.isenabled()
        return list(range(n))

    assert build(3) == [0, 1, 2] and build.__name__ == "build" and build.__doc__ == "Build n things."
    assert gc.isenabled()
