"""xarray interop: Exposure <-> Dataset conversion and the ``.imr`` accessors.

An exposure becomes a `xarray.Dataset` with ``image``, ``mask`` and ``variance`` on dims
``("y", "x")``, whose coordinates are parent pixel indices (``x = x0 + arange(width)``). Everything
else is stored so that the Dataset writes to netCDF or zarr as is: ``x0`` and ``y0`` as int
attributes, and the mask plane names as CF flag attributes on ``mask`` (``flag_masks``, a list of
bit values, and ``flag_meanings``, the names separated by spaces). The PSF, WCS and header
metadata are not carried (they do not fit such attributes). Pixels are not copied: numpy planes
are shared and Dask planes stay lazy.

Importing this module registers ``DataArray.imr`` (``da.imr.map_reduce(func, ...)``) and
``Dataset.imr`` (``ds.imr.to_exposure()``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .arrays import map_reduce
from .geom import Point2I
from .image import Exposure, ExposureD, ExposureF

__all__ = ["exposure_to_xarray", "exposure_from_xarray", "MapReduceAccessor", "ExposureDatasetAccessor"]

#: Dimension names, in array order.
DIMS = ("y", "x")
PLANES = ("image", "mask", "variance")


def exposure_to_xarray(exposure: Exposure) -> xr.Dataset:
    """Return an exposure's planes as a Dataset in parent pixel coordinates (no copy).

    Parameters
    ----------
    exposure : `Exposure`
        The exposure; numpy or Dask planes.

    Returns
    -------
    dataset : `xarray.Dataset`
        ``image``, ``mask``, ``variance`` on dims ``("y", "x")``; coordinates ``y = y0 +
        arange(height)``, ``x = x0 + arange(width)``; attrs ``x0``, ``y0``; the mask plane names in
        the CF attributes ``flag_masks``/``flag_meanings`` of ``mask``.

    Raises
    ------
    ValueError
        If a mask plane name contains whitespace (CF's ``flag_meanings`` separates names by spaces).

    Examples
    --------
    >>> from imagemapreduce import ExposureF, Box2I, Point2I, Extent2I
    >>> exp = ExposureF(Box2I(Point2I(100, 200), Extent2I(4, 3)))
    >>> ds = exposure_to_xarray(exp)
    >>> ds.image.dims, int(ds.x[0]), int(ds.y[0]), ds.attrs["x0"]
    (('y', 'x'), 100, 200, 100)
    >>> ds.mask.attrs["flag_meanings"].split()[:2]
    ['BAD', 'SAT']
    """
    x0, y0 = exposure.getXY0()
    height, width = exposure.getHeight(), exposure.getWidth()
    planes = sorted(exposure.mask.getMaskPlaneDict().items(), key=lambda item: item[1])
    spaced = [name for name, _ in planes if not name or any(c.isspace() for c in name)]
    if spaced:
        raise ValueError(f"mask plane names {spaced} cannot be stored as CF flag_meanings; rename the planes")
    mask_attrs = {
        "flag_masks": [1 << bit for _, bit in planes],
        "flag_meanings": " ".join(name for name, _ in planes),
    }
    coords = {"y": np.arange(y0, y0 + height, dtype=np.int64), "x": np.arange(x0, x0 + width, dtype=np.int64)}
    data_vars = {
        "image": (DIMS, exposure.image.array),
        "mask": (DIMS, exposure.mask.array, mask_attrs),
        "variance": (DIMS, exposure.variance.array),
    }
    return xr.Dataset(data_vars, coords=coords, attrs={"x0": int(x0), "y0": int(y0)})


def exposure_from_xarray(ds: xr.Dataset | xr.DataArray, cls: type[Exposure] | None = None) -> Exposure:
    """Build an exposure from a Dataset made by `exposure_to_xarray` (or any like it), without copying.

    Parameters
    ----------
    ds : `xarray.Dataset` or `xarray.DataArray`
        A Dataset with an ``image`` variable and optionally ``mask`` and ``variance`` (missing ones
        are zero), or a DataArray taken as the image. Variables must have dims ``y`` and ``x`` (in
        either order). xy0 comes from the ``x``/``y`` coordinates when present (so a slice such as
        ``ds.isel(x=slice(10, None))`` keeps its place), else from the ``x0``/``y0`` attrs, else 0.
    cls : `type`, optional
        The Exposure class; by default `ExposureF` for float32 images, `ExposureD` for float64,
        else `Exposure`.

    Returns
    -------
    exposure : `Exposure`
        Sharing the variables' numpy arrays, or holding their Dask arrays (still lazy).

    Raises
    ------
    ValueError
        For missing or wrongly named dims, coordinates that are not consecutive integers, or CF
        flag attributes that are not single bits.

    Examples
    --------
    >>> from imagemapreduce import ExposureF, Box2I, Point2I, Extent2I
    >>> exp = ExposureF(Box2I(Point2I(-3, 7), Extent2I(5, 4)))
    >>> back = exposure_from_xarray(exposure_to_xarray(exp))
    >>> back.getBBox() == exp.getBBox(), type(back).__name__
    (True, 'ExposureF')
    """
    if isinstance(ds, xr.DataArray):
        ds = xr.Dataset({"image": ds}, attrs=dict(ds.attrs))
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"exposure_from_xarray takes an xarray.Dataset or DataArray, got {type(ds).__name__}")
    if "image" not in ds.data_vars:
        raise ValueError(f"the Dataset has no 'image' variable (it has {sorted(map(str, ds.data_vars))})")
    arrays = {name: _plane(ds[name]) for name in PLANES if name in ds.data_vars}
    xy0 = Point2I(_origin(ds, "x"), _origin(ds, "y"))
    plane_dict = _plane_dict(ds["mask"].attrs) if "mask" in ds.data_vars else None
    image = arrays["image"]
    if cls is None:
        cls = {np.dtype(np.float32): ExposureF, np.dtype(np.float64): ExposureD}.get(np.dtype(image.dtype), Exposure)
    return cls.from_arrays(image, arrays.get("mask"), arrays.get("variance"), xy0=xy0, planeDict=plane_dict)


def _plane(var: xr.DataArray) -> Any:
    if set(var.dims) != set(DIMS) or var.ndim != 2:
        raise ValueError(
            f"variable {var.name!r} has dims {var.dims}; exposure planes need dims ('y', 'x'): "
            "rename them with .rename(...) or select one plane"
        )
    return var.transpose(*DIMS).data


def _origin(ds: xr.Dataset, dim: str) -> int:
    """Return the parent index of pixel 0 along ``dim``: from its coordinate, else attrs, else 0."""
    if dim in ds.coords and ds.sizes.get(dim, 0) > 0:
        values = np.asarray(ds.coords[dim].values)
        if values.dtype.kind not in "iuf" or not np.array_equal(values, values[0] + np.arange(len(values))):
            raise ValueError(
                f"coordinate {dim!r} must be consecutive integer pixel indices (x0 + arange(n)); got "
                f"{values[:5]!r}...; drop it with .drop_vars({dim!r}) to use the {dim}0 attribute"
            )
        return int(values[0])
    return int(ds.attrs.get(f"{dim}0", 0))


def _plane_dict(attrs: dict[str, Any]) -> dict[str, int] | None:
    """Read the mask plane dictionary from CF flag attributes; None (default planes) if absent."""
    if "flag_masks" not in attrs or "flag_meanings" not in attrs:
        return None
    masks = np.atleast_1d(np.asarray(attrs["flag_masks"])).tolist()
    names = str(attrs["flag_meanings"]).split()
    if len(masks) != len(names):
        raise ValueError(f"mask flag_masks has {len(masks)} entries but flag_meanings names {len(names)} planes")
    planes = {}
    for name, value in zip(names, masks, strict=True):
        value = int(value)
        if value <= 0 or value & (value - 1):
            raise ValueError(f"mask plane {name!r} has flag_masks value {value}; each must be a single bit (2**k)")
        planes[name] = value.bit_length() - 1
    return planes


@xr.register_dataarray_accessor("imr")
class MapReduceAccessor:
    """``DataArray.imr``: imagemapreduce methods on a 2-d DataArray.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> import imagemapreduce  # registers the accessor
    >>> da = xr.DataArray(np.ones((4, 6)), dims=("y", "x"), attrs={"units": "adu"})
    >>> out = da.imr.map_reduce(np.negative, cell_size=2, scheduler="synchronous")
    >>> float(out.sum()), out.attrs["units"]
    (-24.0, 'adu')
    """

    def __init__(self, obj: xr.DataArray):
        self._obj = obj

    def map_reduce(self, func: Any, **kwargs: Any) -> Any:
        """`imagemapreduce.map_reduce` of this DataArray; same keywords, returns a DataArray."""
        return map_reduce(self._obj, func, **kwargs)

    def to_exposure(self, cls: type[Exposure] | None = None) -> Exposure:
        """Return an exposure whose image is this DataArray (zero mask and variance).

        See `exposure_from_xarray`.
        """
        return exposure_from_xarray(self._obj, cls)


@xr.register_dataset_accessor("imr")
class ExposureDatasetAccessor:
    """``Dataset.imr``: turn a Dataset from `exposure_to_xarray` back into an exposure."""

    def __init__(self, obj: xr.Dataset):
        self._obj = obj

    def to_exposure(self, cls: type[Exposure] | None = None) -> Exposure:
        """Return the exposure; see `exposure_from_xarray`."""
        return exposure_from_xarray(self._obj, cls)
