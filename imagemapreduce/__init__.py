"""imagemapreduce: LSST's ImageMapReduceTask, standalone and parallel on Dask.

Split an exposure (image, mask, variance, PSF) into a grid of cells with bordered "expanded"
cells, run the same mapper on every cell as its own Dask task, and stitch the results back into
a new exposure (copy, sum, average) or return them. The names follow the LSST stack
(``lsst.geom``, ``lsst.afw.image``, ``lsst.pipe.base``, ``lsst.ip.diffim``) so LSST code ports
with an import change.
"""

from .arrays import map_reduce
from .engine import CellFailure
from .geom import Box2I, Extent2D, Extent2I, Point2D, Point2I
from .grid import CellGrid
from .homogenize import PsfMatchMapper, PsfMatchMapperConfig
from .image import (
    Exposure,
    ExposureD,
    ExposureF,
    Image,
    ImageD,
    ImageF,
    ImageI,
    ImageU,
    Mask,
    MaskedImage,
    MaskedImageD,
    MaskedImageF,
    MaskX,
)
from .mapper import ImageMapper, ImageMapperConfig
from .mapreduce import ImageMapReduceConfig, ImageMapReduceTask
from .measure import measure_star_widths, width_map
from .pipe_base import Struct, Task, TaskMetadata, timeMethod
from .psf import (
    CoaddPsf,
    DoubleGaussianPsf,
    GaussianPsf,
    Psf,
    Quadrupole,
    VaryingGaussianPsf,
    VaryingMoffatPsf,
    WindowedCoaddPsf,
)
from .reducer import ImageReducer, ImageReducerConfig
from .simulate import simulate_exposure
from .xarray_support import exposure_from_xarray, exposure_to_xarray  # also registers the .imr accessors

__version__ = "0.1.0"

__all__ = [
    "Box2I",
    "CellFailure",
    "CellGrid",
    "CoaddPsf",
    "DoubleGaussianPsf",
    "Exposure",
    "ExposureD",
    "ExposureF",
    "Extent2D",
    "Extent2I",
    "GaussianPsf",
    "Image",
    "ImageD",
    "ImageF",
    "ImageI",
    "ImageMapReduceConfig",
    "ImageMapReduceTask",
    "ImageMapper",
    "ImageMapperConfig",
    "ImageReducer",
    "ImageReducerConfig",
    "ImageU",
    "Mask",
    "MaskX",
    "MaskedImage",
    "MaskedImageD",
    "MaskedImageF",
    "Point2D",
    "Point2I",
    "Psf",
    "Quadrupole",
    "Struct",
    "Task",
    "TaskMetadata",
    "timeMethod",
    "PsfMatchMapper",
    "PsfMatchMapperConfig",
    "VaryingGaussianPsf",
    "VaryingMoffatPsf",
    "WindowedCoaddPsf",
    "measure_star_widths",
    "simulate_exposure",
    "width_map",
    "exposure_from_xarray",
    "exposure_to_xarray",
    "map_reduce",
]
