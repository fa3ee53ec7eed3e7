"""An independent reference: LSST's serial map-reduce, transcribed as plain numpy loops.

This follows ``lsst.ip.diffim.ImageMapReduceTask._runMapper`` and ``ImageReducer._reduceImage``
line by line (boolean-mask indexing and all), with no code shared with the package's engine.
"""

from __future__ import annotations

import numpy as np


def reference_map(exposure, boxes0, boxes1, mapper, **kwargs):
    """Run ``mapper.run`` on private copies of every cell, in grid order."""
    results = []
    for box0, box1 in zip(boxes0, boxes1):
        sub = exposure[box0].clone()
        expanded = exposure[box1].clone()
        results.append(mapper.run(sub, expanded, exposure.getBBox(), **kwargs))
    return results


def reference_reduce(results, exposure, operation, bad_planes=("INVALID_MAPREDUCE", "BAD", "NO_DATA")):
    """Return (image, mask, variance, planeDict) as LSST's reducer computes them."""
    x0, y0 = exposure.getXY0().x, exposure.getXY0().y
    image = exposure.image.array.copy()
    variance = exposure.variance.array.copy()
    mask = exposure.mask.array.copy()
    planes = exposure.mask.getMaskPlaneDict()
    if operation == "copy":
        image[:, :] = np.nan
        variance[:, :] = np.nan
        weights = None
    else:
        image[:, :] = 0.0
        variance[:, :] = 0.0
        weights = np.zeros(image.shape, dtype=np.int32) if operation == "average" else None
    for res in results:
        item = res.subExposure
        bb = item.getBBox()
        sl = (slice(bb.getMinY() - y0, bb.getMaxY() + 1 - y0), slice(bb.getMinX() - x0, bb.getMaxX() + 1 - x0))
        sub_image, sub_variance, sub_mask = image[sl], variance[sl], mask[sl]
        patch_image, patch_variance = item.image.array, item.variance.array
        is_valid = ~np.isnan(patch_image * patch_variance)
        if operation == "copy":
            sub_image[is_valid] = patch_image[is_valid]
            sub_variance[is_valid] = patch_variance[is_valid]
            sub_mask[:, :] |= item.mask.array
        else:
            sub_image[is_valid] += patch_image[is_valid]
            sub_variance[is_valid] += patch_variance[is_valid]
            sub_mask[:, :] |= item.mask.array
            if operation == "average":
                weights[sl][is_valid] += 1
    for name in bad_planes:
        if name not in planes:
            planes[name] = next(b for b in range(32) if b not in planes.values())
    bad = 0
    for name in bad_planes:
        bad |= 1 << planes[name]
    is_nan = np.where(np.isnan(image * variance))
    if len(is_nan[0]) > 0:
        mask[is_nan[0], is_nan[1]] |= bad
    if operation == "average":
        wts = weights.astype(float)
        wts_zero = np.equal(wts, 0.0)
        wts_zero_inds = np.where(wts_zero)
        not_wts_zero = ~wts_zero
        np.divide(image, wts, out=image, where=not_wts_zero)
        np.divide(variance, wts, out=variance, where=not_wts_zero)
        if len(wts_zero_inds[0]) > 0:
            image[wts_zero_inds] = np.nan
            variance[wts_zero_inds] = np.nan
            mask[wts_zero_inds] |= bad
    return image, mask, variance, planes
