"""Hangs, interrupts, dying workers and bad input: each gives a clear error or the correct result.

Sections: a per-cell timeout (config ``cellTimeout``, ``map_reduce(cell_timeout=)``, the CLI's
``--cell-timeout``); Ctrl-C and SIGTERM stopping the CLI on every scheduler without leaving a
process behind; a worker dying during the pre-flight import check; mappers and functions that
cannot be pickled; custom weight functions that return the wrong thing; and a table of bad
arguments to every entry point. Every server here listens on 127.0.0.1 and is started and
stopped by this module.
"""

# ruff: noqa: D103 - test functions are named for what they check

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import lsst.pex.config as pexConfig
import numpy as np
import psutil
import pytest
from conftest import cluster_client, make_exposure
from fault_mappers import (
    DOOMED,
    HangingMapper,
    LockHoldingMapper,
    SlowThenFastMapper,
    die_in_check,
    double,
    sleepy,
)
from test_cli import one_line_error

import imagemapreduce as imr
from imagemapreduce.cli import main
from imagemapreduce.engine import cells, scheduling
from imagemapreduce.io.fits import write_exposure

TESTS = Path(__file__).parent
LOCAL_SCHEDULERS = ["synchronous", "threads", "processes"]
ALL_SCHEDULERS = [*LOCAL_SCHEDULERS, "distributed"]


# -- fixtures and helpers ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """A cluster of one worker process (two threads) of this module's own, on 127.0.0.1.

    Its own, because the tests leave abandoned cells sleeping on it for a few seconds.
    """
    yield from cluster_client(1, 2)


def scheduler_for(name, request):
    """The scheduler argument for a scheduler name ('distributed' is this module's cluster)."""
    return request.getfixturevalue("cluster") if name == "distributed" else name


def make_task(mapper=HangingMapper, scheduler="synchronous", mapper_fields=None, **fields):
    """A task with 32 px cells tiling the image (no overlap) and 4 px borders."""
    config = imr.ImageMapReduceConfig()
    config.mapper.retarget(mapper)
    for name, value in (mapper_fields or {}).items():
        setattr(config.mapper, name, value)
    config.scaleByFwhm = False
    config.adjustGridOption = "none"
    config.cellSizeX = config.cellSizeY = config.gridStepX = config.gridStepY = 32
    config.borderSizeX = config.borderSizeY = 4
    config.numWorkers = None if not isinstance(scheduler, str) or scheduler == "synchronous" else 2
    for name, value in fields.items():
        setattr(config, name, value)
    if isinstance(scheduler, str):
        config.scheduler = scheduler
        return imr.ImageMapReduceTask(config=config)
    return imr.ImageMapReduceTask(config=config, scheduler=scheduler)


def planes(exposure):
    mi = exposure.maskedImage
    return mi.image.array, mi.variance.array, mi.mask.array


# -- 1. the per-cell timeout ---------------------------------------------------------------------

HANG_AT = [40, 10]  # a pixel of the cell at (32, 0)-(63, 31) only


@pytest.mark.parametrize("scheduler", ALL_SCHEDULERS)
def test_cell_past_its_timeout_fails_the_run_naming_cell_and_time(scheduler, request):
    task = make_task(scheduler=scheduler_for(scheduler, request), cellTimeout=0.5,
                     mapper_fields={"hangAt": HANG_AT, "hangSeconds": 4.0})  # fmt: skip
    start = time.perf_counter()
    with pytest.raises(imr.CellFailure, match=r"failed on cell 2 .*CellTimeout: timed out after 0.5 s"):
        task.run(make_exposure(64, 64, seed=3))
    assert time.perf_counter() - start < 3.5  # not the 4 s of the hang


@pytest.mark.parametrize("scheduler", ALL_SCHEDULERS)
def test_timed_out_cell_is_masked_and_the_others_keep_their_bits(scheduler, request):
    exposure = make_exposure(64, 64, seed=4)
    reference = make_task(scheduler="synchronous", mapper_fields={"mode": "none"}).run(exposure).exposure
    task = make_task(scheduler=scheduler_for(scheduler, request), cellTimeout=0.5, maskFailures=True,
                     mapper_fields={"hangAt": HANG_AT, "hangSeconds": 4.0})  # fmt: skip
    result = task.run(exposure)
    assert [(f.index, str(f.bbox)) for f in result.failures] == [(2, str(task.boxes0[2]))]
    assert result.failures[0].error.startswith("CellTimeout: timed out after 0.5 s")
    lost = np.zeros((64, 64), dtype=bool)
    lost[task.boxes0[2].slices(exposure.getXY0())] = True
    image, variance, mask = planes(result.exposure)
    assert np.isnan(image[lost]).all()
    assert (mask[lost] & result.exposure.mask.getPlaneBitMask("INVALID_MAPREDUCE")).all()
    for got, want in zip((image, variance, mask), planes(reference)):
        np.testing.assert_array_equal(got[~lost], want[~lost])


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_timed_out_cell_is_retried_and_then_succeeds(scheduler, tmp_path):
    exposure = make_exposure(64, 64, seed=5)
    reference = make_task(scheduler="synchronous", mapper_fields={"mode": "none"}).run(exposure).exposure
    task = make_task(SlowThenFastMapper, scheduler, cellTimeout=0.3, numRetries=1)
    result = task.run(exposure, markers=str(tmp_path), seconds=3.0)
    for got, want in zip(planes(result.exposure), planes(reference)):
        np.testing.assert_array_equal(got, want)
    assert len(os.listdir(tmp_path)) == 4  # every cell's first call timed out


def test_timeout_without_retries_fails_the_slow_first_call(tmp_path):
    task = make_task(SlowThenFastMapper, "threads", cellTimeout=0.3, numRetries=0)
    with pytest.raises(imr.CellFailure, match="timed out after 0.3 s"):
        task.run(make_exposure(64, 64), markers=str(tmp_path), seconds=3.0)


def test_timeout_changes_no_output_bit_when_cells_finish():
    exposure = make_exposure(96, 80, seed=6)
    free = make_task(scheduler="threads", mapper_fields={"mode": "none"}).run(exposure).exposure
    bounded = make_task(scheduler="threads", cellTimeout=30.0, mapper_fields={"mode": "none"}).run(exposure).exposure
    for got, want in zip(planes(bounded), planes(free)):
        np.testing.assert_array_equal(got, want)
    image = np.random.default_rng(1).normal(size=(50, 70))
    np.testing.assert_array_equal(
        imr.map_reduce(image, double, cell_size=16, border=2, scheduler="threads", cell_timeout=30.0),
        imr.map_reduce(image, double, cell_size=16, border=2, scheduler="threads"),
    )


def test_no_thread_is_started_per_cell_without_a_timeout(monkeypatch):
    def no_thread(*args, **kwargs):
        raise AssertionError("a thread was started for a cell without a timeout")

    # The cells' module only: the cluster's own threads must not be disturbed.
    monkeypatch.setattr(cells, "threading", SimpleNamespace(Thread=no_thread, current_thread=threading.current_thread))
    result = make_task(scheduler="synchronous", mapper_fields={"mode": "none"}).run(make_exposure(64, 64))
    assert np.isfinite(result.exposure.image.array).all()


def test_cpu_time_of_a_cell_run_under_a_timeout_is_still_counted():
    # The mapper spins in a helper thread; without counting that thread a cell would show ~0 s.
    task = make_task(scheduler="synchronous", cellTimeout=10.0, mapper_fields={"mode": "busy", "hangSeconds": 0.1})
    task.run(make_exposure(64, 64))
    assert min(task.metadata.getArray("cellCpuTime")) > 0.005


@pytest.mark.parametrize("scheduler", ALL_SCHEDULERS)
def test_map_reduce_cell_timeout(scheduler, request):
    image = np.ones((32, 32))
    start = time.perf_counter()
    with pytest.raises(imr.CellFailure, match=r"function 'sleepy' failed on cell .*timed out after 0.25 s"):
        imr.map_reduce(image, sleepy, cell_size=16, func_kwargs={"seconds": 4.0, "hang_on": 16},
                       scheduler=scheduler_for(scheduler, request), cell_timeout=0.25)  # fmt: skip
    assert time.perf_counter() - start < 3.5


def test_map_reduce_cell_timeout_on_a_lazy_result():
    import dask.array as da

    image = da.ones((32, 32), chunks=16)
    result = imr.map_reduce(image, sleepy, cell_size=16, func_kwargs={"seconds": 4.0, "hang_on": 0},
                            cell_timeout=0.25)  # fmt: skip
    with pytest.raises(imr.CellFailure, match="timed out after 0.25 s"):
        result.compute(scheduler="synchronous")


def test_cli_cell_timeout_fails_or_masks_the_hanging_cell(tmp_path, capsys, cli_input):
    args = ["run", str(cli_input), str(tmp_path / "out.fits"), "--mapper", "fault_mappers:HangingMapper",
            "--mapper-option", "hangAt=40,10", "--mapper-option", "hangSeconds=4", "--cell-size", "32",
            "--border", "4", "--adjust", "none", "--scheduler", "threads", "--no-progress",
            "--cell-timeout", "0.3"]  # fmt: skip
    message = one_line_error(capsys, main(args), expected_status=1)
    assert "timed out after 0.3 s" in message and "--mask-failures" in message
    assert not (tmp_path / "out.fits").exists(), "a failed run writes no output"
    assert main([*args, "--mask-failures"]) == 0
    out = capsys.readouterr().out
    assert "failures   1" in out and "timed out after 0.3 s" in out


# -- 2. Ctrl-C and SIGTERM stop the CLI ----------------------------------------------------------


@pytest.fixture(scope="module")
def cli_input(tmp_path_factory):
    path = tmp_path_factory.mktemp("faults-cli") / "in.fits"
    write_exposure(make_exposure(64, 64, seed=9, psf=False), path)
    return path


def start_hanging_cli(cli_input, tmp_path, scheduler, mode="sleep", hang_seconds=1e9, **popen):
    """Start the CLI on a mapper that hangs; return it once a cell is inside the mapper."""
    started = tmp_path / "started"
    started.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    command = [sys.executable, "-m", "imagemapreduce", "run", str(cli_input), str(tmp_path / "out.fits"),
               "--mapper", "fault_mappers:HangingMapper", "--mapper-option", f"startedDir={started}",
               "--mapper-option", f"mode={mode}", "--mapper-option", f"hangSeconds={hang_seconds}",
               "--cell-size", "32", "--border", "4", "--scheduler", scheduler, "--workers", "2",
               "--no-progress"]  # fmt: skip
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)
    deadline = time.monotonic() + 60
    while not any(started.iterdir()):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise AssertionError(f"the CLI did not reach the mapper: {process.communicate()}")
        time.sleep(0.02)
    return process


def alive(processes):
    """The processes that still run (zombies waiting to be reaped do not count)."""
    living = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                living.append(process)
        except psutil.NoSuchProcess:
            pass
    return living


def stop_and_check(process, send, expected_status, expected_message):
    """Send a signal; check a prompt exit, the status, a one-line message and that no child survives."""
    children = psutil.Process(process.pid).children(recursive=True)
    try:
        sent = time.monotonic()
        send()
        out, err = process.communicate(timeout=10)
        took = time.monotonic() - sent
        assert process.returncode == expected_status, err
        assert err.splitlines() == [f"imagemapreduce: error: {expected_message}"], err
        assert took < 5.0
        deadline = time.monotonic() + 5
        while alive(children) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert alive(children) == [], [p.cmdline() for p in alive(children)]
    finally:
        for leftover in [process, *children]:
            try:
                leftover.kill()
            except (psutil.NoSuchProcess, ProcessLookupError):
                pass


@pytest.mark.parametrize("mode", ["sleep", "busy"])
@pytest.mark.parametrize("scheduler", LOCAL_SCHEDULERS)
def test_sigint_stops_the_cli_at_once_on_a_stuck_mapper(scheduler, mode, cli_input, tmp_path):
    process = start_hanging_cli(cli_input, tmp_path, scheduler, mode)
    stop_and_check(process, lambda: process.send_signal(signal.SIGINT), 130, "interrupted")


@pytest.mark.parametrize("scheduler", ["threads", "processes"])
def test_sigterm_stops_the_cli_at_once_and_ends_its_workers(scheduler, cli_input, tmp_path):
    process = start_hanging_cli(cli_input, tmp_path, scheduler, "busy")
    stop_and_check(process, lambda: process.send_signal(signal.SIGTERM), 143, "terminated")


def test_ctrl_c_on_the_terminal_interrupts_the_cli_not_its_workers(cli_input, tmp_path):
    # A terminal's Ctrl-C goes to the whole process group: the workers must not print tracebacks.
    process = start_hanging_cli(cli_input, tmp_path, "processes", start_new_session=True)
    stop_and_check(process, lambda: os.killpg(process.pid, signal.SIGINT), 130, "interrupted")


def test_sigint_stops_the_cli_on_a_cluster_and_cancels_its_cells(cluster, cli_input, tmp_path):
    def tasks(dask_scheduler):
        return len(dask_scheduler.tasks)

    # Other tests of this module share the cluster: an abandoned (timed-out) cell of theirs may
    # still be finishing, so the CLI's cells are the tasks above what was there before it.
    before = cluster.run_on_scheduler(tasks)
    process = start_hanging_cli(cli_input, tmp_path, cluster.scheduler.address, hang_seconds=6)
    stop_and_check(process, lambda: process.send_signal(signal.SIGINT), 130, "interrupted")
    deadline = time.monotonic() + 5
    while cluster.run_on_scheduler(tasks) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert cluster.run_on_scheduler(tasks) <= before


# -- 3. a worker that dies during the pre-flight import check ------------------------------------


@pytest.fixture
def fragile_cluster(monkeypatch):
    """Two in-process workers on 127.0.0.1 whose import check kills the workers named in DOOMED."""
    from distributed import Client, LocalCluster

    monkeypatch.setattr(scheduling, "_import_modules", die_in_check)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=False, protocol="tcp", host="127.0.0.1",
                           dashboard_address="127.0.0.1:0")  # fmt: skip
    client = Client(cluster, set_as_default=False)
    yield client
    DOOMED.clear()
    client.close()
    cluster.close()


def test_worker_dying_during_the_import_check_is_left_out(fragile_cluster):
    DOOMED.add(0)
    image = np.arange(24.0 * 24).reshape(24, 24)
    result = imr.map_reduce(image, double, cell_size=8, border=1, scheduler=fragile_cluster)
    np.testing.assert_array_equal(result, image * 2)
    assert len(fragile_cluster.nthreads()) == 1


def test_no_worker_left_after_the_import_check_is_a_clear_error(fragile_cluster):
    DOOMED.update({0, 1})
    with pytest.raises(RuntimeError, match=r"every Dask worker of the cluster at tcp://127\.0\.0\.1:\d+ died during "
                       r"the pre-flight check .*restart the workers"):  # fmt: skip
        imr.map_reduce(np.ones((16, 16)), double, cell_size=8, scheduler=fragile_cluster)


# -- 4. code that cannot be pickled --------------------------------------------------------------

_LOCK = threading.Lock()


def _closure_holding_a_lock():
    lock = threading.Lock()

    def locked(cell):
        with lock:
            return cell * 2.0

    return locked


@pytest.mark.parametrize("scheduler", ["processes", "distributed"])
def test_unpicklable_mapper_is_refused_before_any_work(scheduler, request, monkeypatch):
    def no_pool(*args, **kwargs):
        raise AssertionError("a process pool was started")

    monkeypatch.setattr(scheduling, "ProcessPoolExecutor", no_pool)
    task = make_task(LockHoldingMapper, scheduler_for(scheduler, request))
    with pytest.raises(TypeError, match=r"^the mapper LockHoldingMapper cannot be pickled .*'_thread.lock'.*"
                       r"module-level class"):  # fmt: skip
        task.run(make_exposure(64, 64))


@pytest.mark.parametrize("scheduler", ["processes", "distributed"])
def test_unpicklable_function_is_refused_naming_it(scheduler, request):
    with pytest.raises(TypeError, match=r"^the function 'locked' cannot be pickled .*module-level function"):
        imr.map_reduce(np.ones((16, 16)), _closure_holding_a_lock(), cell_size=8,
                       scheduler=scheduler_for(scheduler, request))  # fmt: skip


def test_unpicklable_weight_function_is_refused_naming_it():
    lock = threading.Lock()

    def locked_weights(bbox, image, variance):
        with lock:
            return np.ones(image.shape)

    with pytest.raises(TypeError, match=r"^the function 'locked_weights' cannot be pickled"):
        imr.map_reduce(np.ones((16, 16)), double, cell_size=8, grid_step=4, weights=locked_weights,
                       scheduler="processes", num_workers=2)  # fmt: skip


def test_lambda_is_fine_on_processes_cloudpickle_sends_it():
    image = np.arange(256.0).reshape(16, 16)
    result = imr.map_reduce(image, lambda cell: cell + 1.0, cell_size=8, scheduler="processes", num_workers=2)
    np.testing.assert_array_equal(result, image + 1.0)


# -- 5. custom weight functions that return the wrong thing ---------------------------------------

BAD_WEIGHTS = {
    "weights_wrong_shape": (ValueError, r"returned an array of shape \(8, 7\) for the cell whose result covers"),
    "weights_negative": (ValueError, r"returned 1 negative or non-finite weights \(-1\.0 at index \(0, 0\)\)"),
    "weights_nan": (ValueError, r"returned 1 negative or non-finite weights \(nan at index \(0, 0\)\)"),
    "weights_inf": (ValueError, r"returned 1 negative or non-finite weights \(inf at index \(7, 7\)\)"),
    "weights_none": (TypeError, r"returned NoneType for the cell"),
    "weights_text": (TypeError, r"returned ndarray of dtype <U1 for the cell"),
    "weights_complex": (TypeError, r"returned ndarray of dtype complex128 for the cell"),
}


@pytest.mark.parametrize("name", BAD_WEIGHTS)
def test_bad_custom_weights_name_the_function_the_cell_and_what_is_expected(name):
    import fault_mappers

    exc, message = BAD_WEIGHTS[name]
    pattern = rf"^weight function '{name}' {message}.*it must return finite weights >= 0 .* of shape \(8, 8\)"
    with pytest.raises(exc, match=pattern):
        imr.map_reduce(np.ones((16, 16)), double, cell_size=8, grid_step=4, weights=getattr(fault_mappers, name),
                       scheduler="synchronous")  # fmt: skip


def test_bad_custom_weights_in_the_task_name_the_cell():
    task = make_task(scheduler="threads", mapper_fields={"mode": "none"})
    task.config.gridStepX = task.config.gridStepY = 16  # overlapping cells: weights are used
    task.reducer.config.weighting = "custom"
    task.reducer.config.weightFunction = "fault_mappers:weights_negative"
    with pytest.raises(ValueError, match=r"^weight function 'weights_negative' returned 1 negative .* for the cell "
                       r"whose result covers \(minimum=\(0, 0\), maximum=\(31, 31\)\)"):  # fmt: skip
        task.run(make_exposure(64, 64))


def test_scalar_custom_weight_is_one_weight_for_the_cell():
    import fault_mappers

    result = imr.map_reduce(np.ones((16, 16)), double, cell_size=8, grid_step=4, weights=fault_mappers.weights_scalar,
                            scheduler="synchronous")  # fmt: skip
    np.testing.assert_array_equal(result, np.full((16, 16), 2.0))


def test_cli_bad_weight_function_is_one_line(cli_input, tmp_path, capsys):
    status = main(["run", str(cli_input), str(tmp_path / "o.fits"), "--mapper", "identity", "--cell-size", "32",
                   "--grid-step", "16", "--border", "4", "--weights", "custom", "--weight-function",
                   "fault_mappers:weights_wrong_shape", "--scheduler", "synchronous", "--no-progress"])  # fmt: skip
    assert "weight function 'weights_wrong_shape' returned an array of shape" in one_line_error(capsys, status)
    assert not (tmp_path / "o.fits").exists(), "a failed run writes no output"


# -- 6. bad arguments everywhere: one clear line --------------------------------------------------

MAP_REDUCE_ERRORS = {
    "scheduler nonsense": ({"scheduler": "nonsense"}, ValueError, r"^unknown scheduler 'nonsense'; use one of"),
    "scheduler a number": ({"scheduler": 3}, TypeError, r"^scheduler must be a name, an address"),
    "num_workers 0": ({"num_workers": 0}, ValueError, r"^num_workers must be a positive integer .* got 0"),
    "num_workers True": ({"num_workers": True}, ValueError, r"^num_workers must be a positive integer .* got True"),
    "num_workers 2.5": ({"num_workers": 2.5}, ValueError, r"^num_workers must be a positive integer .* got 2\.5"),
    "func not callable": ({"func": 3}, TypeError, r"^func must be callable"),
    "reduce median": ({"reduce": "median"}, ValueError, r"^reduce must be one of 'copy', 'sum', 'average', 'none'"),
    "reduce None": ({"reduce": None}, ValueError, r"^reduce must be one of"),
    "weights bogus": ({"weights": "bogus"}, ValueError, r"^unknown weights 'bogus'"),
    "dtype bogus": ({"dtype": "bogus"}, TypeError, r"^dtype must be a numpy floating or complex dtype"),
    "dtype int": ({"dtype": int}, ValueError, r"^dtype must be a floating or complex type"),
    "cell_timeout 0": ({"cell_timeout": 0}, ValueError, r"^cell_timeout must be a finite number of seconds above 0"),
    "cell_timeout -1": ({"cell_timeout": -1.0}, ValueError, r"^cell_timeout must be a finite number of seconds"),
    "cell_timeout nan": ({"cell_timeout": math.nan}, ValueError, r"^cell_timeout must be a finite number"),
    "cell_timeout inf": ({"cell_timeout": math.inf}, ValueError, r"^cell_timeout must be a finite number"),
    "cell_timeout text": ({"cell_timeout": "5"}, TypeError, r"^cell_timeout must be a number of seconds or None"),
    "cell_timeout True": ({"cell_timeout": True}, TypeError, r"^cell_timeout must be a number of seconds or None"),
    "cell_size 0": ({"cell_size": 0}, ValueError, r"^cell_size must be at least 1 pixel"),
    "border -1": ({"border": -1}, ValueError, r"^border must be at least 0 pixels"),
    "region_size 0": ({"region_size": 0}, ValueError, r"^region_size must be a positive int"),
}


@pytest.mark.parametrize("case", MAP_REDUCE_ERRORS, ids=list(MAP_REDUCE_ERRORS))
def test_map_reduce_bad_arguments_are_one_clear_error_before_any_work(case):
    arguments, exc, pattern = MAP_REDUCE_ERRORS[case]
    arguments = {"func": double, "cell_size": 8, "scheduler": "threads", **arguments}
    with pytest.raises(exc, match=pattern) as info:
        imr.map_reduce(np.ones((16, 16)), arguments.pop("func"), **arguments)
    assert "\n" not in str(info.value)


CONFIG_ERRORS = {
    "numWorkers 0": ("numWorkers", 0),
    "numRetries -1": ("numRetries", -1),
    "cellTimeout 0": ("cellTimeout", 0.0),
    "cellTimeout -1": ("cellTimeout", -1.0),
    "cellTimeout nan": ("cellTimeout", math.nan),
    "cellTimeout inf": ("cellTimeout", math.inf),
    "stitchRegionSize 0": ("stitchRegionSize", 0),
}


@pytest.mark.parametrize("case", CONFIG_ERRORS, ids=list(CONFIG_ERRORS))
def test_config_rejects_bad_values_naming_the_field(case):
    name, value = CONFIG_ERRORS[case]
    config = imr.ImageMapReduceConfig()
    with pytest.raises(pexConfig.FieldValidationError, match=rf"^Field '{name}' failed validation"):
        setattr(config, name, value)


def test_config_cell_timeout_defaults_to_no_limit_and_takes_seconds():
    config = imr.ImageMapReduceConfig()
    assert config.cellTimeout is None
    config.cellTimeout = 2.5
    config.validate()


def test_unknown_scheduler_in_the_config_fails_before_any_work():
    task = make_task(scheduler="synchronous", mapper_fields={"mode": "none"})
    task.config.scheduler = "nonsense"
    with pytest.raises(ValueError, match=r"^unknown scheduler 'nonsense'; use one of"):
        task.run(make_exposure(64, 64))


CLI_ERRORS = {
    "border -1": (["--border", "-1"], "argument --border: expected a positive number"),
    "cell-size 0": (["--cell-size", "0"], "argument --cell-size: expected a positive number"),
    "cell-size nan": (["--cell-size", "nan"], "argument --cell-size: expected a positive number"),
    "scheduler nonsense": (["--scheduler", "nonsense"], "argument --scheduler: unknown scheduler 'nonsense'"),
    "workers 0": (["--workers", "0"], "argument --workers: expected a positive integer"),
    "region-size 0": (["--region-size", "0"], "argument --region-size: expected a positive integer"),
    "cell-timeout 0": (["--cell-timeout", "0"], "argument --cell-timeout: expected a positive number"),
    "cell-timeout -1": (["--cell-timeout", "-1"], "argument --cell-timeout: expected a positive number"),
    "cell-timeout nan": (["--cell-timeout", "nan"], "argument --cell-timeout: expected a positive number"),
    "cell-timeout inf": (["--cell-timeout", "inf"], "argument --cell-timeout: expected a positive number"),
    "cell-timeout abc": (["--cell-timeout", "abc"], "argument --cell-timeout: expected a positive number"),
    "config numRetries=-1": (["--config", "numRetries=-1"], "--config numRetries=-1: Value -1 is not a valid"),
    "config numWorkers=0": (["--config", "numWorkers=0"], "--config numWorkers=0: Value 0 is not a valid"),
    "config cellTimeout=0": (["--config", "cellTimeout=0"], "--config cellTimeout=0: Value 0.0 is not a valid"),
    "config cellTimeout=nan": (["--config", "cellTimeout=nan"], "--config cellTimeout=nan: Value nan is not"),
    "config scheduler=nonsense": (["--config", "scheduler=nonsense"], "unknown scheduler 'nonsense'"),
    "weights custom alone": (["--weights", "custom"], "--weights custom needs --weight-function MODULE:FUNCTION"),
    "weight function not callable": (["--weights", "custom", "--weight-function", "math:pi"],
                                     "--weight-function 'math:pi' is not a function"),
    "weight function missing": (["--weights", "custom", "--weight-function", "math:nope"],
                                "module 'math' has no 'nope' (from --weight-function 'math:nope')"),
}  # fmt: skip


@pytest.mark.parametrize("case", CLI_ERRORS, ids=list(CLI_ERRORS))
def test_cli_bad_options_give_one_line_and_status_2(case, cli_input, tmp_path, capsys):
    extra, expected = CLI_ERRORS[case]
    status = main(["run", str(cli_input), str(tmp_path / "out.fits"), "--mapper", "identity", "--no-progress",
                   *(["--scheduler", "synchronous"] if "--scheduler" not in extra else []), *extra])  # fmt: skip
    assert expected in one_line_error(capsys, status)
    assert not (tmp_path / "out.fits").exists(), "refused before any work"
    assert not (tmp_path / "out.fits").exists()
