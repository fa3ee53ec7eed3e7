"""Matplotlib drawings of grids of boxes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .geom import Box2I

__all__ = ["plot_box_grid"]


def plot_box_grid(boxes: Sequence[Box2I], bbox: Box2I, ax: Any = None, **kwargs: Any) -> Any:
    """Draw the outline of each box (through its corners) and set the axis limits to ``bbox``.

    Parameters
    ----------
    boxes : sequence of `Box2I`
        The boxes to draw.
    bbox : `Box2I`
        The full image's box; the axes span its begin to end.
    ax : matplotlib Axes, optional
        Where to draw; the current Axes by default.
    **kwargs
        Line properties passed to ``ax.plot`` (``ls="--"``, ``color=...``). A ``label`` goes on
        the first box only, so that a legend shows the grid once.

    Returns
    -------
    ax : matplotlib Axes
    """
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    label = kwargs.pop("label", None)
    for number, box in enumerate(boxes):
        corners = np.array([(pt.getX(), pt.getY()) for pt in box.getCorners()], dtype=float)
        corners = np.vstack([corners, corners[:1]])
        ax.plot(corners[:, 0], corners[:, 1], **kwargs, **({"label": label} if number == 0 and label else {}))
    ax.set_xlim(bbox.getBeginX(), bbox.getEndX())
    ax.set_ylim(bbox.getBeginY(), bbox.getEndY())
    return ax
