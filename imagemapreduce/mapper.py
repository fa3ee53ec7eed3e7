"""The mapper subtask: what runs on every cell."""

from __future__ import annotations

import abc
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
