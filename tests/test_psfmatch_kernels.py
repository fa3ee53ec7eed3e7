"""Matching kernels solved in stacks, cores convolved alone, tiles of cells, batched PSF images and moments.

Each batched path is checked against the one-at-a-time code it replaces (itself checked against
independent references in test_psfmatch_exact.py and test_psf.py) or against scipy directly, and
the tiles against what makes them worth having: one solve per tile, the same bits on every
scheduler and every batching of cells into tasks.
"""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import threading

import numpy as np
import pytest
from scipy import ndimage

import imagemapreduce as imr
from imagemapreduce.geom import Box2I, Extent2I, Point2D, Point2I
from imagemapreduce.psf import MoffatPsf, adaptive_moments, adaptive_moments_many
from imagemapreduce.psfmatch import homogenize as H
from imagemapreduce.psfmatch import kernels as K
from imagemapreduce.psfmatch.homogenize import KernelTiles, PsfMatchMapper, make_target
from imagemapreduce.psfmatch.kernels import (
    convolve_cell,
    convolve_core,
    solve_matching_kernel,
    solve_matching_kernels,
)
from imagemapreduce.psfmatch.simulate import field_psf, simulate_exposure

BBOX = Box2I(Point2I(0, 0), Extent2I(320, 320))
TARGET = make_target(2.6, size=31).computeKernelImage(Point2D(0.0, 0.0)).array


def field_images(profile: str = "moffat", count: int = 6, g_max: float = 0.04) -> np.ndarray:
    psf = field_psf(BBOX, profile, 2.5, 4.5, beta=3.5, g_max=g_max)
    return np.stack([psf.computeKernelImage(Point2D(40.0 * k, 300.0 - 45.0 * k)).array for k in range(count)])


def lopsided(image: np.ndarray) -> np.ndarray:
    """A PSF with a faint companion off to one side: not symmetric under a half turn."""
    shifted = np.roll(image, (1, 2), axis=(0, 1))
    return image + 0.05 * shifted


@pytest.mark.parametrize("solver", ["leastSquares", "wiener"])
def test_kernels_solved_together_equal_kernels_solved_alone(solver):
    images = field_images()
    images = np.concatenate([images, lopsided(images[0])[None]])  # one asymmetric basis in the stack
    together = solve_matching_kernels(images, TARGET, solver=solver, tolerance=2e-3)
    alone = [solve_matching_kernel(image, TARGET, solver=solver, tolerance=2e-3) for image in images]
    assert len(together) == len(images)
    for a, b in zip(together, alone, strict=True):
        assert a.radius == b.radius
        np.testing.assert_allclose(a.array, b.array, rtol=0, atol=1e-9 * np.abs(b.array).max())
        assert a.array.sum() == pytest.approx(1.0, abs=1e-12)
        for field in ("gain", "noise", "residual", "misfit"):
            assert getattr(a, field) == pytest.approx(getattr(b, field), rel=1e-6)


def test_the_lopsided_psf_gets_a_lopsided_kernel_that_still_matches():
    image = lopsided(field_images(count=1)[0])
    kernel = solve_matching_kernels([image], TARGET, tolerance=2e-3)[0]
    assert not np.allclose(kernel.array, kernel.array[::-1, ::-1])
    matched = ndimage.convolve(np.pad(image / image.sum(), 20), kernel.array, mode="constant")
    expected = np.pad(TARGET / TARGET.sum(), (20 + (image.shape[0] - TARGET.shape[0]) // 2))
    assert np.sqrt(np.sum((matched - expected) ** 2) / np.sum(expected**2)) <= 2e-3


def test_a_fixed_radius_and_the_radius_search_agree_with_a_full_scan():
    images = field_images(count=4)
    searched = solve_matching_kernels(images, TARGET, tolerance=3e-3)
    for image, kernel in zip(images, searched, strict=True):
        # A full scan: the smallest radius of the ladder whose fixed-radius solve fits.
        fits = [
            r for r in (2, 3, 4, 5, 6, 7, 8, 10, 12) if solve_matching_kernel(image, TARGET, radius=r).misfit <= 3e-3
        ]
        assert kernel.radius == fits[0]
    fixed = solve_matching_kernels(images, TARGET, radius=3)
    assert {k.radius for k in fixed} == {3}


def test_bad_stacks_are_refused():
    with pytest.raises(ValueError, match="psf_images must be equally shaped 2-d"):
        solve_matching_kernels(np.ones((5, 5)), TARGET)
    with pytest.raises(ValueError, match="solver must be one of"):
        solve_matching_kernels(field_images(count=1), TARGET, solver="magic")
    assert solve_matching_kernels(np.empty((0, 5, 5)), TARGET) == []


@pytest.mark.parametrize("mode", ["nearest", "reflect", "mirror"])
@pytest.mark.parametrize(
    "core", [(slice(0, 20), slice(0, 30)), (slice(5, 33), slice(7, 40)), (slice(30, 40), slice(41, 50))]
)
def test_a_core_alone_equals_scipy_on_the_whole_array(mode, core):
    rng = np.random.default_rng(3)
    array = rng.normal(size=(40, 50)).astype(np.float32)
    kernel = rng.random((7, 7))
    expected = ndimage.convolve(array.astype(np.float64), kernel, mode=mode)[core]
    (got,) = convolve_core([array], [kernel], core, mode)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(
        convolve_cell(array, kernel, mode), ndimage.convolve(array.astype(np.float64), kernel, mode=mode), atol=1e-12
    )


def test_a_nan_spreads_over_the_kernels_footprint_in_the_core_only_where_it_reaches():
    array = np.ones((30, 30))
    array[3, 3] = np.nan
    core = (slice(5, 25), slice(5, 25))
    (got,) = convolve_core([array], [np.full((5, 5), 1 / 25)], core, "nearest")
    bad = np.isnan(got)
    # The NaN at (3, 3) reaches output pixels within 2 of it: (5, 5) in the core, nothing else.
    assert bad[0, 0] and bad.sum() == 1
    np.testing.assert_allclose(got[~bad], 1.0)


def test_tiles_are_fixed_blocks_of_grid_positions():
    boxes = [Box2I(Point2I(x, y), Extent2I(32, 32)) for y in range(0, 640, 32) for x in range(0, 320, 32)]
    tiles = KernelTiles.from_boxes(boxes)
    assert len(tiles.xs) == 10 and len(tiles.ys) == 20
    xs, ys = tiles.tile_of(15.5, 15.5)
    assert xs == tiles.xs[:8] and ys == tiles.ys[:8]
    # The last, partial tile along x holds the two remaining columns.
    xs, ys = tiles.tile_of(303.5, 623.5)
    assert xs == tiles.xs[8:] and ys == tiles.ys[16:]
    assert tiles.tile_of(16.0, 15.5) is None  # not a cell centre
    assert tiles.tile_of(1e6, 15.5) is None


def make_task(**config_fields) -> imr.ImageMapReduceTask:
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(PsfMatchMapper)
    config.reducer.reduceOperation = "average"
    config.reducer.weighting = "linear"
    for name, value in dict(scaleByFwhm=False, cellSizeX=64, cellSizeY=64, gridStepX=32, gridStepY=32,
                            borderSizeX=12, borderSizeY=12, adjustGridOption="none").items():  # fmt: skip
        setattr(config, name, value)
    for name, value in config_fields.items():
        setattr(config, name, value)
    return imr.ImageMapReduceTask(config=config)


@pytest.fixture(scope="module")
def exposure():
    psf = field_psf(BBOX, "moffat", 2.5, 4.5, beta=3.5, g_max=0.04, size=25)
    return simulate_exposure(320, 320, psf=psf, n_stars=40, seed=8, noise=True)[0]


def test_tiles_give_the_same_bits_on_every_scheduler_and_batching(exposure):
    outputs = []
    for scheduler, per_task in [("synchronous", 1), ("threads", 1), ("threads", "auto"), ("synchronous", 7)]:
        H.clear_caches()
        task = make_task(scheduler=scheduler, numWorkers=2, cellsPerTask=per_task)
        outputs.append(task.run(exposure, targetSigma=2.6).exposure)
    for other in outputs[1:]:
        for plane in ("image", "variance", "mask"):
            a = getattr(outputs[0].maskedImage, plane).array
            b = getattr(other.maskedImage, plane).array
            assert np.array_equal(a, b, equal_nan=True), plane


def test_a_tile_is_solved_once_however_many_threads_ask(exposure, monkeypatch):
    task = make_task()
    task.generateGrid(exposure)
    H.clear_caches()
    task.mapper.prepareRun(exposure, task.boxes0, targetSigma=2.6)
    calls = []
    real = H.solve_matching_kernels

    def counting(*args, **kwargs):
        calls.append(len(args[0]))
        return real(*args, **kwargs)

    monkeypatch.setattr(H, "solve_matching_kernels", counting)  # the tiles' solve
    monkeypatch.setattr(K, "solve_matching_kernels", counting)  # under solve_matching_kernel
    psf, target = exposure.getPsf(), task.mapper.resolveTarget(exposure.getPsf(), exposure.getBBox(), targetSigma=2.6)
    centres = [box.getCenter() for box in task.boxes0[:8]]  # eight cells of the first tile
    barrier = threading.Barrier(len(centres))
    kernels = {}

    def solve(centre):
        barrier.wait()
        kernels[centre.x, centre.y] = task.mapper.solveKernel(psf, target, centre)

    threads = [threading.Thread(target=solve, args=(c,)) for c in centres]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert calls == [64] and len(kernels) == 8
    # A position that is no cell centre is solved alone, as well as its tile's neighbour.
    alone = task.mapper.solveKernel(psf, target, Point2D(centres[0].x + 0.25, centres[0].y))
    assert calls == [64, 1]
    neighbour = kernels[centres[0].x, centres[0].y]
    assert alone.radius == neighbour.radius and alone.misfit <= 5e-3 and neighbour.misfit <= 5e-3


@pytest.mark.parametrize("profile", ["gaussian", "moffat", "kolmogorov"])
@pytest.mark.parametrize("g_max", [0.0, 0.04])
@pytest.mark.parametrize("pixel", [True, False])
def test_kernel_images_at_many_positions_equal_one_at_a_time(profile, g_max, pixel):
    psf = field_psf(BBOX, profile, 2.5, 4.5, g_max=g_max, pixelIntegrated=pixel)
    positions = [Point2D(11.0 * k, 319.0 - 23.0 * k) for k in range(13)]
    many = psf.computeKernelImages(positions)
    one = np.stack([psf.computeKernelImage(p).array for p in positions])
    assert many.shape == one.shape
    np.testing.assert_allclose(many, one, rtol=1e-13, atol=1e-16)
    np.testing.assert_allclose(many.sum(axis=(1, 2)), 1.0, atol=1e-12)


def test_a_constant_psf_has_kernel_images_at_many_positions_too():
    psf = MoffatPsf(21, 21, 3.0, 3.5)
    images = psf.computeKernelImages([Point2D(0.0, 0.0), (5.0, 9.0)])
    assert images.shape == (2, 21, 21)
    np.testing.assert_array_equal(images[0], psf.computeKernelImage().array)
    assert psf.computeKernelImages([]).shape == (0, 21, 21)


def test_moments_of_a_stack_equal_one_at_a_time():
    images = field_images(count=9)
    centre = (images.shape[2] // 2, images.shape[1] // 2)
    many = adaptive_moments_many(images, centre)
    for image, row in zip(images, many, strict=True):
        shape, _ = adaptive_moments(image, centre)
        np.testing.assert_allclose(row, (shape.getIxx(), shape.getIyy(), shape.getIxy()), rtol=1e-12, atol=1e-14)
    relaxed = adaptive_moments_many(images, centre, tol=1e-9, relaxation=2.0, start=tuple(many[0]))
    np.testing.assert_allclose(relaxed, many, rtol=1e-6)


def test_a_stack_with_a_failing_image_raises_that_images_error():
    images = field_images(count=3)
    images[1] = 0.0  # no flux: the weighted flux is not positive
    with pytest.raises(ValueError, match="weighted flux"):
        adaptive_moments_many(images, (images.shape[2] // 2, images.shape[1] // 2))
    with pytest.raises(ValueError, match="stack of non-empty 2-d arrays"):
        adaptive_moments_many(images[0], (1, 1))
    with pytest.raises(ValueError, match="relaxation must be in"):
        adaptive_moments_many(images, (1, 1), relaxation=3.0)


def test_a_varying_target_is_solved_per_position_within_a_tile(exposure):
    from imagemapreduce.psf import VaryingGaussianPsf

    task = make_task()
    task.generateGrid(exposure)
    H.clear_caches()
    task.mapper.prepareRun(exposure, task.boxes0, targetSigma=3.2)
    psf = exposure.getPsf()
    target = VaryingGaussianPsf.radial(31, 31, BBOX, 3.0, 3.4)
    for box in task.boxes0[:3] + task.boxes0[-2:]:
        centre = box.getCenter()
        tiled = task.mapper.solveKernel(psf, target, centre)
        alone = solve_matching_kernel(psf.computeKernelImage(centre).array, target.computeKernelImage(centre).array)
        assert tiled.radius == alone.radius
        np.testing.assert_allclose(tiled.array, alone.array, atol=1e-9 * np.abs(alone.array).max())


class UnhashableMoffat(MoffatPsf):
    """A third-party PSF that defines equality without a hash: nothing can be cached for it."""

    __hash__ = None  # type: ignore[assignment]


def test_a_psf_that_cannot_be_hashed_is_matched_cell_by_cell():
    from imagemapreduce.psf import GaussianPsf

    box = Box2I(Point2I(0, 0), Extent2I(160, 160))
    field = simulate_exposure(160, 160, psf=MoffatPsf(25, 25, 3.0, 3.5), n_stars=12, seed=2, noise=False)[0]
    outputs = []
    for psf in (MoffatPsf(25, 25, 3.0, 3.5), UnhashableMoffat(25, 25, 3.0, 3.5)):
        field.setPsf(psf)
        H.clear_caches()
        outputs.append(make_task(scheduler="synchronous").run(field, target=GaussianPsf(31, 31, 2.0)).exposure)
    assert box == outputs[0].getBBox()
    np.testing.assert_allclose(
        outputs[1].image.array, outputs[0].image.array, rtol=0, atol=1e-5 * np.abs(outputs[0].image.array).max()
    )


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cores_convolved_together_are_bitwise_the_cores_convolved_alone(dtype):
    rng = np.random.default_rng(5)
    image = rng.normal(size=(90, 100)).astype(np.float32)
    image[40, 44] = np.nan
    variance = rng.random((90, 100)).astype(np.float32)
    cells = []
    for k, (y, x) in enumerate([(0, 0), (20, 30), (20, 50), (50, 60), (60, 0), (70, 80)] * 4):
        kernel = rng.random((2 * (2 + k % 3) + 1,) * 2)
        core = (slice(y, y + 20), slice(x, x + 20))  # edge cells padded, inner ones not
        cells.append(([image, variance], [kernel, kernel**2], core))
    assert 2 * len(cells) > K._PLANES_AT_ONCE  # more planes of one shape than one FFT call takes
    together = K.convolve_cores(cells, "reflect", dtype)
    assert len(together) == len(cells)
    for (arrays, kernels, core), got in zip(cells, together, strict=True):
        alone = convolve_core(arrays, kernels, core, "reflect", dtype)
        assert all(a.dtype == dtype and np.array_equal(a, b, equal_nan=True) for a, b in zip(got, alone, strict=True))
        expected = ndimage.convolve(np.nan_to_num(image.astype(np.float64)), kernels[0], mode="reflect")[core]
        finite = np.isfinite(got[0])
        scale = np.abs(expected).max()
        np.testing.assert_allclose(
            got[0][finite], expected[finite], atol=(1e-5 if dtype == np.float32 else 1e-12) * scale
        )


def test_single_precision_ffts_stay_within_their_rounding_of_double_precision():
    rng = np.random.default_rng(6)
    array = (1e4 * rng.random((80, 80)) ** 8).astype(np.float32)  # a few bright pixels on a faint floor
    kernel = rng.random((11, 11))
    kernel /= kernel.sum()
    core = (slice(10, 70), slice(10, 70))
    (single,) = convolve_core([array], [kernel], core, "nearest", np.float32)
    (double,) = convolve_core([array], [kernel], core, "nearest", np.float64)
    error = np.abs(single.astype(np.float64) - double).max()
    assert 0 < error <= 1e-6 * np.abs(array).max()


@pytest.mark.parametrize("method", ["exact", "gaussian"])
def test_run_cells_returns_what_run_returns_for_each_cell_bit_for_bit(exposure, method):
    task = make_task()
    task.mapper.config.method = method
    task.generateGrid(exposure)
    mapper, bbox = task.mapper, exposure.getBBox()
    H.clear_caches()
    mapper.prepareRun(exposure, task.boxes0, targetSigma=2.6)
    picked = [0, 1, 9, 10, 11, len(task.boxes0) - 1]  # corner, edge and inner cells
    cells = [(exposure[task.boxes0[k]], exposure[task.boxes1[k]]) for k in picked]
    together = mapper.runCells(cells, bbox, targetSigma=2.6)
    assert len(together) == len(cells)
    for (sub, expanded), got in zip(cells, together, strict=True):
        alone = mapper.run(sub, expanded, bbox, targetSigma=2.6)
        for plane in ("image", "variance", "mask"):
            a, b = getattr(got.subExposure, plane).array, getattr(alone.subExposure, plane).array
            assert a.dtype == b.dtype and np.array_equal(a, b, equal_nan=True), plane
        assert got.subExposure.getBBox() == sub.getBBox() and got.targetSigma == alone.targetSigma
        if method == "exact":
            assert np.array_equal(got.kernel.array, alone.kernel.array) and got.target == alone.target
            assert set(got.timings) == {"psf", "solve", "convolve"} and got.timings["convolve"] > 0


def test_double_precision_convolution_is_the_single_precision_result_to_float32_rounding(exposure):
    outputs = {}
    for precision in ("image", "double"):
        H.clear_caches()
        task = make_task(scheduler="synchronous")
        task.mapper.config.convolutionPrecision = precision
        outputs[precision] = task.run(exposure, targetSigma=2.6).exposure.image.array
    single, double = outputs["image"], outputs["double"]
    assert single.dtype == double.dtype == np.float32
    finite = np.isfinite(double)
    assert np.array_equal(finite, np.isfinite(single))
    error = np.abs(single[finite].astype(np.float64) - double[finite]).max()
    assert 0 < error <= 2e-6 * np.abs(double[finite]).max()
