"""Pixel containers with ``lsst.afw.image`` names and semantics, numpy underneath."""

from ._exposure import Exposure, ExposureD, ExposureF
from ._image import Image, ImageD, ImageF, ImageI, ImageU
from ._mask import DEFAULT_MASK_PLANES, Mask, MaskX
from ._masked_image import MaskedImage, MaskedImageD, MaskedImageF

__all__ = [
    "Image",
    "ImageF",
    "ImageD",
    "ImageI",
    "ImageU",
    "Mask",
    "MaskX",
    "DEFAULT_MASK_PLANES",
    "MaskedImage",
    "MaskedImageF",
    "MaskedImageD",
    "Exposure",
    "ExposureF",
    "ExposureD",
]
