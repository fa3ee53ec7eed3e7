"""Point-spread functions with ``lsst.afw.detection`` / ``lsst.meas.algorithms`` names, numpy underneath.

`GaussianPsf` and `DoubleGaussianPsf` are analytic and constant over the image; `CoaddPsf` is the
weighted mean of the PSFs of a coadd's inputs. Shapes are `Quadrupole` second moments, measured
on images with `adaptive_moments`. `psf_to_dict` and `psf_from_dict` turn the built-in PSFs into
plain data and back: how stores record a PSF without pickling it.
"""

from ._base import Psf
from ._callable import CallablePsf
from ._coadd import CoaddPsf
from ._gaussian import DoubleGaussianPsf, GaussianPsf
from ._persist import PsfFormatError, psf_from_dict, psf_to_dict
from ._profiles import EllipticalGaussianPsf, KolmogorovPsf, MoffatPsf, moments_to_shear
from ._shape import Quadrupole, adaptive_moments, adaptive_moments_many
from ._varying import VaryingGaussianPsf, VaryingKolmogorovPsf, VaryingMoffatPsf
from ._windowed import WindowedCoaddPsf

__all__ = [
    "Psf",
    "GaussianPsf",
    "DoubleGaussianPsf",
    "CoaddPsf",
    "WindowedCoaddPsf",
    "VaryingGaussianPsf",
    "VaryingMoffatPsf",
    "VaryingKolmogorovPsf",
    "EllipticalGaussianPsf",
    "MoffatPsf",
    "KolmogorovPsf",
    "CallablePsf",
    "moments_to_shear",
    "Quadrupole",
    "adaptive_moments",
    "adaptive_moments_many",
    "psf_to_dict",
    "psf_from_dict",
    "PsfFormatError",
]
