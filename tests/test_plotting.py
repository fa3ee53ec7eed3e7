"""Tests for drawing a grid: ``ImageMapReduceTask.plotBoxes`` (through `imagemapreduce.plotting`)."""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from grid_reference import make_config, make_exposure  # noqa: E402

from imagemapreduce import ImageMapReduceTask  # noqa: E402
from imagemapreduce.geom import Box2I, Extent2I, Point2I  # noqa: E402


# -- plotBoxes ---------------------------------------------------------------------------------------
def test_plot_boxes_needs_a_grid():
    task = ImageMapReduceTask(config=make_config())
    with pytest.raises(RuntimeError, match="_generateGrid"):
        task.plotBoxes(Box2I(Point2I(0, 0), Extent2I(10, 10)))


@pytest.mark.parametrize("skip", [1, 3, 4])
def test_plot_boxes_draws_every_skipth_cell(skip):
    task = ImageMapReduceTask(config=make_config(scaleByFwhm=False, cellSizeX=12.0, cellSizeY=9.0))
    exposure = make_exposure(70, 50, (100, 37))
    task._generateGrid(exposure)
    bbox = exposure.getBBox()
    fig, ax = plt.subplots()
    try:
        returned = task.plotBoxes(bbox, skip=skip, ax=ax)
        assert returned is ax
        lines = ax.get_lines()
        dashed = [line for line in lines if line.get_linestyle() == "--"]
        dotted = [line for line in lines if line.get_linestyle() == ":"]
        n = len(task.boxes0[::skip])
        assert n > 1
        assert len(dashed) == len(dotted) == n and len(lines) == 2 * n
        assert ax.get_xlim() == (bbox.getBeginX(), bbox.getEndX())
        assert ax.get_ylim() == (bbox.getBeginY(), bbox.getEndY())
        # Each dashed outline goes through the corners of its cell, closing on the first.
        for line, box in zip(dashed, task.boxes0[::skip], strict=True):
            xs, ys = line.get_data()
            corners = [(p.getX(), p.getY()) for p in box.getCorners()]
            assert list(zip(xs, ys, strict=True)) == corners + corners[:1]
        for line, box in zip(dotted, task.boxes1[::skip], strict=True):
            xs, _ = line.get_data()
            assert (min(xs), max(xs)) == (box.getMinX(), box.getMaxX())
        # A cell and its expanded cell share a colour.
        assert [line.get_color() for line in dashed] == [line.get_color() for line in dotted]
    finally:
        plt.close(fig)


def test_plot_boxes_default_skip_and_current_axes():
    task = ImageMapReduceTask(config=make_config(scaleByFwhm=False))
    exposure = make_exposure(60, 40)
    task._generateGrid(exposure)
    fig = plt.figure()
    try:
        ax = task.plotBoxes(exposure.getBBox())
        assert ax is plt.gca()
        n = len(task.boxes0[::3])
        styles = [line.get_linestyle() for line in ax.get_lines()]
        assert styles.count("--") == styles.count(":") == n == len(styles) // 2
    finally:
        plt.close(fig)
