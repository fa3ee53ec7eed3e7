"""imagemapreduce: LSST's ImageMapReduceTask, standalone and parallel on Dask.

Split an exposure (image, mask, variance, PSF) into a grid of cells with bordered "expanded"
cells, run the same mapper on every cell as its own Dask task, and stitch the results back into
a new exposure (copy, sum, average) or return them. The names follow the LSST stack
(``lsst.geom``, ``lsst.afw.image``, ``lsst.pipe.base``, ``lsst.ip.diffim``) so LSST code ports
with an import change.

The names below load on first use (module ``__getattr__``), so ``import imagemapreduce`` and
the command line's ``--help`` start at once; ``from imagemapreduce import X`` works as usual.

The modules form layers, lowest first: `geom`; `image`; `psf`; `grid`; `stitch`; `engine`;
`io` and `xarray_support`; `zarr_run` and `catalog_run`; `mapreduce`; `psfmatch` (the PSF
matching showcase, a subpackage); `cli`. A module imports
nothing of a layer above its own, not even inside a function (the test suite checks it). This
root stands above them all: it tells the image layer where its FITS and xarray conveniences'
functions live (`_providers`).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from importlib.abc import MetaPathFinder
from typing import TYPE_CHECKING, Any

from . import _providers

__version__ = "0.1.0"

#: Where each public name lives, relative to this package.
_LAZY: dict[str, str] = {
    "map_reduce": ".arrays",
    "CellFailure": ".engine",
    **dict.fromkeys(["Box2I", "Extent2D", "Extent2I", "Point2D", "Point2I"], ".geom"),
    "CellGrid": ".grid",
    **dict.fromkeys(
        [
            "Exposure",
            "ExposureD",
            "ExposureF",
            "Image",
            "ImageD",
            "ImageF",
            "ImageI",
            "ImageU",
            "Mask",
            "MaskedImage",
            "MaskedImageD",
            "MaskedImageF",
            "MaskX",
        ],
        ".image",
    ),
    **dict.fromkeys(["ImageMapper", "ImageMapperConfig"], ".mapper"),
    **dict.fromkeys(["ImageMapReduceConfig", "ImageMapReduceTask"], ".mapreduce"),
    **dict.fromkeys(["Struct", "Task", "TaskMetadata", "timeMethod"], ".pipe_base"),
    **dict.fromkeys(
        [
            "CoaddPsf",
            "DoubleGaussianPsf",
            "GaussianPsf",
            "Psf",
            "Quadrupole",
            "VaryingGaussianPsf",
            "VaryingMoffatPsf",
            "WindowedCoaddPsf",
        ],
        ".psf",
    ),
    **dict.fromkeys(["ImageReducer", "ImageReducerConfig"], ".reducer"),
    **dict.fromkeys(["read_exposure", "write_exposure"], ".io.fits"),
    **dict.fromkeys(["exposure_from_xarray", "exposure_to_xarray"], ".xarray_support"),
}

if TYPE_CHECKING:  # for type checkers and IDEs, which do not run __getattr__
    from .arrays import map_reduce
    from .engine import CellFailure
    from .geom import Box2I, Extent2D, Extent2I, Point2D, Point2I
    from .grid import CellGrid
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
    from .io.fits import read_exposure, write_exposure
    from .mapper import ImageMapper, ImageMapperConfig
    from .mapreduce import ImageMapReduceConfig, ImageMapReduceTask
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
    from .xarray_support import exposure_from_xarray, exposure_to_xarray


#: Subpackages reachable as attributes (``imr.psfmatch.PsfMatchMapper``) without importing them first.
_SUBPACKAGES = frozenset({"io", "psf", "psfmatch"})


def __getattr__(name: str) -> Any:
    """Import a public name's module on first use and keep the name here."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f".{name}", __name__)
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY, *_SUBPACKAGES})


# -- the image classes' conveniences -------------------------------------------------------------
# ``Exposure.writeFits``, ``readFits``, ``to_xarray`` ... call functions of modules that import the
# image classes; the image layer looks them up by name (see `_providers`) rather than import them.
_providers.provide(f"{__name__}.io.fits", "read_exposure", "write_exposure", "read_masked_image", "write_masked_image")
_providers.provide(f"{__name__}.xarray_support", "exposure_from_xarray", "exposure_to_xarray")


# -- the xarray accessors ------------------------------------------------------------------------
# ``DataArray.imr`` and ``Dataset.imr`` must exist once both packages are imported, in either
# order, without importing xarray (half a second) with this package.


def _register_accessors() -> None:
    importlib.import_module(".xarray_support", __name__)  # registering is a side effect of the import


class _AfterXarray(MetaPathFinder):
    """Registers the accessors right after ``import xarray`` finishes, then steps aside."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname != "xarray":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        loader = spec.loader
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _register_accessors()

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if "xarray" in sys.modules:
    _register_accessors()
elif not any(isinstance(finder, _AfterXarray) for finder in sys.meta_path):
    sys.meta_path.insert(0, _AfterXarray())


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
    "VaryingGaussianPsf",
    "VaryingMoffatPsf",
    "WindowedCoaddPsf",
    "exposure_from_xarray",
    "exposure_to_xarray",
    "map_reduce",
    "read_exposure",
    "write_exposure",
]
