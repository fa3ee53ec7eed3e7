"""File input and output: FITS in the layout the LSST stack writes (`imagemapreduce.io.fits`), and zarr stores.

Zarr stores (`imagemapreduce.io.zarr_store`) are read lazily and record checksums; a map-reduce's
zarr output (`imagemapreduce.io.zarr_regions`) is written region by region and verified by
`verify_zarr_store`. Stores may live at fsspec URLs (``s3://``, ``gs://``, ``memory://``,
``file://``; `imagemapreduce.io.locations`), and a FITS file may be read from one
(`read_exposure_url`). A catalog run's Parquet dataset (`imagemapreduce.io.parquet_catalog`) is
read by `read_catalog` (an astropy ``Table``) or `open_catalog` (a lazy Dask DataFrame).
"""

from .fits import (
    FitsFormatError,
    FitsLayoutWarning,
    read_exposure,
    read_masked_image,
    write_exposure,
    write_masked_image,
)
from .locations import read_exposure_url
from .parquet_catalog import open_catalog, read_catalog
from .zarr_regions import StoreBusyError, StoreOwnershipError, StoreVerification, verify_zarr_store
from .zarr_store import IncompleteStoreError, ZarrFormatError, open_zarr_exposure, write_zarr_exposure

__all__ = [
    "IncompleteStoreError",
    "StoreBusyError",
    "StoreOwnershipError",
    "StoreVerification",
    "ZarrFormatError",
    "open_zarr_exposure",
    "verify_zarr_store",
    "write_zarr_exposure",
    "read_exposure_url",
    "open_catalog",
    "read_catalog",
    "FitsFormatError",
    "FitsLayoutWarning",
    "read_exposure",
    "read_masked_image",
    "write_exposure",
    "write_masked_image",
]
