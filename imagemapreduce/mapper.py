"""The mapper subtask: what runs on every cell."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import lsst.pex.config as pexConfig

from .geom import Box2I
from .image import Exposure
from .pipe_base import Struct, Task

__all__ = ["ImageMapperConfig", "ImageMapper"]


class ImageMapperConfig(pexConfig.Config):
    """Configuration for an `ImageMapper`; subclass it to add the mapper's own fields."""


class ImageMapper(Task, metaclass=abc.ABCMeta):
    """Abstract base of the subtask that `ImageMapReduceTask` runs on every cell.

    Subclass it and implement `run`; select it with ``config.mapper.retarget(MyMapper)``.

    Notes
    -----
    A mapper instance travels to Dask workers, so it must pickle (every `Task` does) and should
    hold no open files or locks. Cells may run at the same time in several threads: ``run`` must
    not change shared state. The sub-exposures it receives are read-only views into the input
    exposure unless the task runs with ``doClone=True``, which gives private copies.
    """

    ConfigClass = ImageMapperConfig
    _DefaultName = "ip_diffim_ImageMapper"

    def prepareRun(self, exposure: Exposure, boxes0: list[Box2I], **kwargs: Any) -> None:
        """Check a run before any cell starts (not in LSST): raise here to refuse it with one error.

        `ImageMapReduceTask` calls it once per run, in the calling process, with the whole
        exposure, the cells and the run's keyword arguments. The default does nothing;
        `~imagemapreduce.psfmatch.homogenize.PsfMatchMapper` checks that its target is reachable in
        every cell.
        """

    @abc.abstractmethod
    def run(self, subExposure: Exposure, expandedSubExposure: Exposure, fullBBox: Box2I, **kwargs: Any) -> Struct:
        """Perform the operation on one cell.

        Parameters
        ----------
        subExposure : `Exposure`
            The cell: a view of the input exposure, in parent pixel coordinates.
        expandedSubExposure : `Exposure`
            The expanded cell (the cell grown by the border), same coordinates.
        fullBBox : `Box2I`
            The bounding box of the whole exposure.
        **kwargs
            The keyword arguments given to `ImageMapReduceTask.run`.

        Returns
        -------
        result : `Struct`
            For the ``copy``, ``sum`` and ``average`` reduce operations it must hold
            ``subExposure``, an `Exposure` whose bbox lies inside the expanded cell (usually the
            cell's). For ``coaddPsf`` it holds ``psf`` and ``bbox`` (or a ``subExposure`` with a PSF).
            For ``none`` it may hold anything.
        """
        return Struct(subExposure=subExposure)

    def runCells(self, cells: Sequence[tuple[Exposure, Exposure]], fullBBox: Box2I, **kwargs: Any) -> list[Struct]:
        """Perform the operation on several neighbouring cells at once (not in LSST): override to batch work.

        The engine packs neighbouring cells into one Dask task (``cellsPerTask``). A mapper that
        overrides this method gets each task's cells in one call, and can share work between
        them: stacked FFTs or solves, one lookup of a shared model. This default runs `run` on
        each cell, and a mapper that does not override it is called through `run`, cell by cell.

        Parameters
        ----------
        cells : sequence of `tuple` [`Exposure`, `Exposure`]
            ``(subExposure, expandedSubExposure)`` of each cell, as `run` takes them.
        fullBBox : `Box2I`
            The bounding box of the whole exposure.
        **kwargs
            The keyword arguments given to `ImageMapReduceTask.run`.

        Returns
        -------
        results : `list` [`Struct`]
            One per cell, in order: for each exactly what `run` returns for that cell, bit for
            bit, so that the output never depends on how cells are packed into tasks.

        Notes
        -----
        The engine calls it for tasks of two or more cells without companion images or a cell
        timeout; the cells share the call's time evenly in the per-cell timings. If it raises,
        or a result fails the reducer's checks, every cell of the task runs again alone through
        `run`, so a failure (retried, masked or raised) is reported for its own cell as without it.
        """
        return [self.run(sub, expanded, fullBBox, **kwargs) for sub, expanded in cells]
