"""Tests for how ImageMapReduceTask keeps its grid: reused while it fits, laid again when reset or outgrown.

Hand-set ``task.boxes0``/``boxes1`` are used as given.
"""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

from grid_reference import make_config, make_exposure, reference_for_task

from imagemapreduce import ImageMapReduceTask
from imagemapreduce.geom import Box2I, Extent2I, Point2I


# -- keeping and reusing the grid --------------------------------------------------------------------
def _run_bboxes(task, exposure):
    result = task.run(exposure)
    return [r.subExposure.getBBox() for r in result.result]


def test_grid_is_kept_and_reused_until_reset():
    config = make_config(scaleByFwhm=False, cellSizeX=12.0, cellSizeY=9.0, gridStepX=8.0, gridStepY=8.0)
    config.reducer.reduceOperation = "none"
    task = ImageMapReduceTask(config=config)
    assert task.boxes0 is None and task.boxes1 is None
    small = make_exposure(40, 30)
    bboxes = _run_bboxes(task, small)
    ref0, ref1 = reference_for_task(small, config)
    assert task.boxes0 == ref0 and task.boxes1 == ref1
    assert bboxes == ref0
    kept0, kept1 = task.boxes0, task.boxes1

    # A second run, on an exposure with the same bbox, reuses the kept grid.
    assert _run_bboxes(task, make_exposure(40, 30)) == ref0
    assert task.boxes0 is kept0 and task.boxes1 is kept1

    # On a larger exposure a new grid is laid (LSST would reuse the old one, leaving most of it NaN).
    large = make_exposure(90, 70)
    new0, new1 = reference_for_task(large, config)
    assert _run_bboxes(task, large) == new0 and new0 != ref0
    assert task.boxes0 == new0 and task.boxes1 == new1

    # Reset: the grid is generated again, for the new exposure.
    task.boxes0 = None
    new_bboxes = _run_bboxes(task, large)
    assert task.boxes0 == new0 and task.boxes1 == new1
    assert new_bboxes == new0

    # Resetting boxes1 alone also regenerates.
    task.boxes1 = None
    assert _run_bboxes(task, small) == ref0 and task.boxes1 == ref1


def test_hand_set_boxes_are_used_by_run():
    config = make_config(scaleByFwhm=False)
    config.reducer.reduceOperation = "none"
    task = ImageMapReduceTask(config=config)
    boxes0 = [Box2I(Point2I(3, 4), Extent2I(5, 6)), Box2I(Point2I(20, 1), Extent2I(7, 2))]
    boxes1 = [Box2I(Point2I(1, 2), Extent2I(9, 10)), Box2I(Point2I(18, 0), Extent2I(11, 4))]
    task.boxes0, task.boxes1 = boxes0, boxes1
    result = task.run(make_exposure(40, 30))
    assert [r.subExposure.getBBox() for r in result.result] == boxes0
    assert task.boxes0 is boxes0 and task.boxes1 is boxes1
    # Replacing the lists (same length) is honoured on the next run.
    task.boxes0 = list(reversed(boxes0))
    task.boxes1 = list(reversed(boxes1))
    result = task.run(make_exposure(40, 30))
    assert [r.subExposure.getBBox() for r in result.result] == boxes0[::-1]


def test_hand_set_boxes_with_xy0():
    config = make_config(scaleByFwhm=False)
    config.reducer.reduceOperation = "none"
    task = ImageMapReduceTask(config=config)
    task.boxes0 = [Box2I(Point2I(105, 40), Extent2I(4, 4))]
    task.boxes1 = [Box2I(Point2I(103, 38), Extent2I(8, 8))]
    result = task.run(make_exposure(20, 20, (100, 37)))
    assert [r.subExposure.getBBox() for r in result.result] == task.boxes0
