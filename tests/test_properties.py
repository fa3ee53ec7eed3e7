"""Property-based tests: identity mappers give the input back for any grid that covers the image."""

# ruff: noqa: D103
from __future__ import annotations

import numpy as np
from conftest import make_exposure
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import imagemapreduce as imr
from imagemapreduce.builtin_mappers import IdentityMapper

grids = st.fixed_dictionaries(
    {
        "width": st.integers(2, 90),
        "height": st.integers(2, 90),
        "x0": st.integers(-50, 50),
        "y0": st.integers(-50, 50),
        "cellSizeX": st.integers(2, 40),
        "cellSizeY": st.integers(2, 40),
        "gridStepX": st.integers(1, 40),
        "gridStepY": st.integers(1, 40),
        "borderSizeX": st.integers(1, 8),
        "borderSizeY": st.integers(1, 8),
        "adjustGridOption": st.sampled_from(["spacing", "size"]),
        "region": st.integers(5, 64),
    }
)


def identity_task(params, operation):
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(IdentityMapper)
    config.reducer.reduceOperation = operation
    config.scheduler = "synchronous"
    config.scaleByFwhm = False
    config.stitchRegionSize = params["region"]
    for name in ("cellSizeX", "cellSizeY", "gridStepX", "gridStepY", "borderSizeX", "borderSizeY"):
        setattr(config, name, float(params[name]))
    config.adjustGridOption = params["adjustGridOption"]
    return imr.ImageMapReduceTask(config=config)


def exposure_for(params):
    return make_exposure(params["width"], params["height"], (params["x0"], params["y0"]), seed=params["width"])


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grids)
def test_copy_of_identity_returns_input_exactly(params):
    exposure = exposure_for(params)
    task = identity_task(params, "copy")
    out = task.run(exposure).exposure
    assert out.image.array.tobytes() == exposure.image.array.tobytes()
    assert out.variance.array.tobytes() == exposure.variance.array.tobytes()
    np.testing.assert_array_equal(out.mask.array, exposure.mask.array)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grids)
def test_average_of_identity_returns_input_within_rounding(params):
    exposure = exposure_for(params)
    out = identity_task(params, "average").run(exposure).exposure
    np.testing.assert_allclose(out.image.array, exposure.image.array, rtol=2e-7, atol=0)
    np.testing.assert_allclose(out.variance.array, exposure.variance.array, rtol=2e-7, atol=0)
    np.testing.assert_array_equal(out.mask.array, exposure.mask.array)
    assert np.isfinite(out.image.array).all()
