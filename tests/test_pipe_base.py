"""Tests for the lsst.pipe.base-compatible Task framework."""

# Test names say what they check; docstrings on each test and test task would only repeat them.
# ruff: noqa: D101, D102, D103

from __future__ import annotations

import concurrent.futures
import copy
import datetime
import gc
import logging
import multiprocessing
import os
import pickle
import platform

import lsst.pex.config as pexConfig
import numpy as np
import pytest

from imagemapreduce.pipe_base import Struct, Task, TaskError, TaskMetadata, logInfo, timeMethod

# --------------------------------------------------------------------------- tasks used by the tests


class Sub2Config(pexConfig.Config):
    factor = pexConfig.Field(dtype=int, default=3, doc="multiplier")


class Sub2Task(Task):
    ConfigClass = Sub2Config
    _DefaultName = "sub2"

    @timeMethod
    def run(self, value: int) -> Struct:
        self.metadata["lastValue"] = value
        return Struct(value=value * self.config.factor)


class SubConfig(pexConfig.Config):
    offset = pexConfig.Field(dtype=int, default=1, doc="added to the input")
    sub2 = Sub2Task.makeField("a sub-subtask")


class SubTask(Task):
    ConfigClass = SubConfig
    _DefaultName = "sub"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("sub2")

    @timeMethod
    def run(self, value: int) -> Struct:
        return Struct(value=self.sub2.run(value + self.config.offset).value)


class AltSubTask(SubTask):
    """Retarget for SubTask: negates the result."""

    @timeMethod
    def run(self, value: int) -> Struct:
        return Struct(value=-super().run(value).value)


class TopConfig(pexConfig.Config):
    sub = SubTask.makeField("a subtask")


class TopTask(Task):
    ConfigClass = TopConfig
    _DefaultName = "top"

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.makeSubtask("sub")

    @timeMethod
    def run(self, value: int) -> Struct:
        return Struct(value=self.sub.run(value).value)

    @timeMethod
    def fail(self) -> None:
        raise TaskError("deliberate failure")


# Timer items logInfo writes for one prefix (from lsst.utils.usage._UsageInfo plus Utc).
TIMER_SUFFIXES = [
    "Utc",
    "CpuTime",
    "UserTime",
    "SystemTime",
    "MaxResidentSetSize",
    "MinorPageFaults",
    "MajorPageFaults",
    "BlockInputs",
    "BlockOutputs",
    "VoluntaryContextSwitches",
    "InvoluntaryContextSwitches",
]


def assertTimed(metadata: TaskMetadata, prefix: str, count: int = 1) -> None:
    """Check the Start/End items of ``count`` timed calls named ``prefix``."""
    for phase in ("Start", "End"):
        for suffix in TIMER_SUFFIXES:
            assert len(metadata.getArray(f"{prefix}{phase}{suffix}")) == count, f"{prefix}{phase}{suffix}"
    for when in ("Start", "End"):
        datetime.datetime.fromisoformat(metadata[f"{prefix}{when}Utc"])  # parses as ISO
    start = datetime.datetime.fromisoformat(metadata[f"{prefix}StartUtc"])
    end = datetime.datetime.fromisoformat(metadata[f"{prefix}EndUtc"])
    assert start.tzinfo is not None and start <= end
    for clock in ("CpuTime", "UserTime", "SystemTime"):
        assert isinstance(metadata[f"{prefix}Start{clock}"], float)
        assert metadata[f"{prefix}End{clock}"] >= metadata[f"{prefix}Start{clock}"]
    rss = metadata[f"{prefix}EndMaxResidentSetSize"]
    assert isinstance(rss, int) and rss >= metadata[f"{prefix}StartMaxResidentSetSize"] > 0
    assert metadata["__version__"] == 1
    assert metadata["nodeName"] == platform.node()


# --------------------------------------------------------------------------- Struct


def test_struct_basics():
    s = Struct(a=1, b="x")
    assert (s.a, s.b) == (1, "x")
    assert len(s) == 2
    assert s.getDict() == {"a": 1, "b": "x"}
    assert repr(s) == "Struct(a=1; b=x)"
    assert s == Struct(a=1, b="x")
    assert s != Struct(a=1, b="y")
    assert s != {"a": 1, "b": "x"}


def test_struct_getDict_and_copy_are_shallow():
    inner = [1, 2]
    s = Struct(lst=inner)
    d = s.getDict()
    d["new"] = 1
    assert not hasattr(s, "new")
    assert d["lst"] is inner
    c = s.copy()
    assert c == s and c is not s and c.lst is inner
    c.extra = 5
    assert not hasattr(s, "extra")


def test_struct_mergeItems():
    a = Struct(x=1)
    b = Struct(y=2, z=3, x=10)
    a.mergeItems(b, "y", "z")
    assert a.getDict() == {"x": 1, "y": 2, "z": 3}
    with pytest.raises(RuntimeError, match="already exists"):
        a.mergeItems(b, "x")
    with pytest.raises(AttributeError):
        a.mergeItems(b, "missing")


@pytest.mark.parametrize("name", ["__foo", "__dict__"])
def test_struct_refuses_dunder_names(name):
    with pytest.raises(RuntimeError, match="must not begin with __|already exists"):
        Struct(**{name: 1})
    s = Struct()
    with pytest.raises(RuntimeError):
        setattr(s, name, 1)


def test_struct_refuses_method_names_and_pickles():
    with pytest.raises(RuntimeError, match="already exists"):
        Struct(copy=1)
    s = Struct(a=np.arange(3), b=None)
    t = pickle.loads(pickle.dumps(s))
    assert t.b is None and np.array_equal(t.a, s.a)


# --------------------------------------------------------------------------- TaskMetadata


def test_metadata_set_get_scalars_and_lists():
    md = TaskMetadata()
    md["i"] = 3
    md["f"] = 1.5
    md["s"] = "text"
    md["b"] = True
    md["lst"] = [1, 2, 3]
    assert (md["i"], md["f"], md["s"], md["b"]) == (3, 1.5, "text", True)
    assert md["lst"] == 3  # last element, as in LSST
    assert md.getArray("lst") == [1, 2, 3]
    assert md.getArray("i") == [3]
    assert md.getScalar("lst") == 3
    assert len(md) == 5
    assert set(md.keys()) == {"i", "f", "s", "b", "lst"}
    assert md.get("missing") is None and md.get("missing", 7) == 7
    with pytest.raises(KeyError):
        md["missing"]
    md["i"] = [4, 5]  # replacing a scalar by a list moves it between slots
    assert md.getArray("i") == [4, 5] and len(md) == 5


def test_metadata_add():
    md = TaskMetadata()
    md.add("x", 1)
    md.add("x", 2)
    md.add("x", [3, 4])
    assert md.getArray("x") == [1, 2, 3, 4]
    assert md["x"] == 4
    md["y"] = 1.0
    md.add("y", 2.0)  # a scalar becomes a list
    assert md.getArray("y") == [1.0, 2.0]
    with pytest.raises(ValueError, match="Type mismatch"):
        md.add("x", "string")
    md.add("deep.er.z", "a")  # creates the missing levels
    md.add("deep.er.z", "b")
    assert md.getArray("deep.er.z") == ["a", "b"]
    with pytest.raises(ValueError, match="TaskMetadata"):
        md.add("deep", 1)


def test_metadata_dotted_keys_and_contains():
    md = TaskMetadata()
    md["a.b.c"] = 1
    md["a.b.d"] = [1.0, 2.0]
    md["a.e"] = "x"
    md["top"] = 5
    assert isinstance(md["a"], TaskMetadata) and isinstance(md["a.b"], TaskMetadata)
    assert md["a"]["b"]["c"] == 1
    assert md["a.b.c"] == 1 and md["a.b.d"] == 2.0
    for key in ("a", "a.b", "a.b.c", "a.e", "top"):
        assert key in md
    for key in ("b", "a.c", "a.b.c.d", "top.x", "zz"):
        assert key not in md
    assert 1 not in md
    assert md.names() == {"top", "a", "a.e", "a.b", "a.b.c", "a.b.d"}
    assert md.paramNames(topLevelOnly=True) == {"top"}
    assert md.paramNames(topLevelOnly=False) == {"top", "a.e", "a.b.c", "a.b.d"}
    assert md.to_dict() == {"top": 5, "a": {"e": "x", "b": {"c": 1, "d": [1.0, 2.0]}}}
    with pytest.raises(KeyError, match="a.b.zz"):
        md["a.b.zz"]
    md["top.sub"] = 1  # a dotted set replaces the scalar by a nested level
    assert md["top.sub"] == 1 and "top" in md.metadata and "top" not in md.scalars


def test_metadata_delete_iterate_items():
    md = TaskMetadata.from_dict({"a": 1, "b": [1, 2], "c": {"d": True}})
    assert list(md) == ["a", "b", "c"]
    assert dict(md.items())["b"] == [1, 2]
    del md["c.d"]
    assert "c" in md and "c.d" not in md
    del md["a"]
    assert list(md) == ["b", "c"]
    with pytest.raises(KeyError):
        del md["a"]
    with pytest.raises(KeyError):
        del md["c.zz"]


def test_metadata_value_validation():
    md = TaskMetadata()
    md["npf"] = np.float64(2.5)
    md["npi"] = np.int32(7)
    md["npb"] = np.bool_(True)
    md["arr"] = np.array([1, 2, 3])
    assert type(md["npf"]) is float and type(md["npi"]) is int and type(md["npb"]) is bool
    assert md.getArray("arr") == [1, 2, 3] and type(md["arr"]) is int
    with pytest.raises(ValueError, match="Type mismatch"):
        md["mixed"] = [1, "a"]
    with pytest.raises(ValueError, match="does not support"):
        md["obj"] = object()
    with pytest.raises(ValueError, match="primitive"):
        md["objs"] = [object()]
    with pytest.raises(KeyError):
        md[3] = 1  # type: ignore[index]
    # a rejected value leaves no half-built nested levels behind
    with pytest.raises(ValueError):
        md["p.q"] = object()
    with pytest.raises(ValueError, match="add"):
        md.add("r.s", {"t": 1})
    assert "p" not in md and "r" not in md


def test_metadata_pickle_and_equality():
    md = TaskMetadata()
    md["a.b"] = [1, 2]
    md.add("c", "x")
    md["d"] = 2.0
    md2 = pickle.loads(pickle.dumps(md))
    assert md2 == md and md2 is not md
    assert md2.to_dict() == md.to_dict()
    assert TaskMetadata.from_metadata(md) == TaskMetadata.from_dict({"a": {"b": [1, 2]}, "c": "x", "d": 2.0})
    md2["d"] = 3.0
    assert md2 != md


def test_logInfo_writes_into_metadata():
    class Holder:
        def __init__(self):
            self.metadata = TaskMetadata()
            self.log = logging.getLogger("holder")

    h = Holder()
    logInfo(h, "blockStart")
    logInfo(h, "blockEnd")
    assertTimed(h.metadata, "block")


# --------------------------------------------------------------------------- Task


@pytest.fixture
def top() -> TopTask:
    return TopTask()


def test_task_names(top):
    assert (top.getName(), top.getFullName()) == ("top", "top")
    assert (top.sub.getName(), top.sub.getFullName()) == ("sub", "top.sub")
    assert (top.sub.sub2.getName(), top.sub.sub2.getFullName()) == ("sub2", "top.sub.sub2")
    assert top.sub._parentTask is top and top.sub.sub2._parentTask is top.sub and top._parentTask is None
    assert TopTask(name="other").getFullName() == "other"


def test_task_dict(top):
    expected = {"top": top, "top.sub": top.sub, "top.sub.sub2": top.sub.sub2}
    for task in (top, top.sub, top.sub.sub2):
        taskDict = task.getTaskDict()
        assert {k: v() for k, v in taskDict.items()} == expected
        taskDict.clear()  # a copy: clearing it leaves the task's dict intact
        assert len(task.getTaskDict()) == 3


def test_task_config(top):
    assert isinstance(top.config, TopConfig)
    assert top.sub.config is top.config.sub.value
    assert top.sub.sub2.config.factor == 3
    config = TopConfig()
    config.sub.offset = 10
    assert TopTask(config=config).run(1).value == 33
    assert TopTask().run(1).value == 6


def test_task_logs(top):
    for task in (top, top.sub, top.sub.sub2):
        assert isinstance(task.log, logging.Logger)
        assert task.log.name == task.getFullName()
    assert top.sub.log.parent is top.log
    prefixed = TopTask(log=logging.getLogger("pipeline"))
    assert prefixed.log.name == "pipeline.top"
    assert prefixed.sub.sub2.log.name == "pipeline.top.sub.sub2"


def test_task_construction_errors():
    class NoNameTask(Task):
        ConfigClass = pexConfig.Config

    with pytest.raises(RuntimeError, match="_DefaultName"):
        NoNameTask()
    assert NoNameTask(name="given").getName() == "given"
    with pytest.raises(RuntimeError, match="subtask"):
        Task(config=pexConfig.Config(), parentTask=NoNameTask(name="p"))
    with pytest.raises(RuntimeError, match="ConfigClass"):
        Task(name="bare")
    with pytest.raises(KeyError, match="does not have field 'nope'"):
        TopTask().makeSubtask("nope")


def test_timeMethod_metadata(top):
    assert top.run(2).value == 9
    assertTimed(top.metadata, "run")
    assertTimed(top.sub.metadata, "run")
    assertTimed(top.sub.sub2.metadata, "run")
    assert top.sub.sub2.metadata["lastValue"] == 3
    top.run(3)
    assertTimed(top.metadata, "run", count=2)
    startCpu = top.metadata.getArray("runStartCpuTime")
    endCpu = top.metadata.getArray("runEndCpuTime")
    assert startCpu[0] <= endCpu[0] <= startCpu[1] <= endCpu[1]


def test_timeMethod_writes_end_when_method_raises(top):
    with pytest.raises(TaskError, match="deliberate"):
        top.fail()
    assertTimed(top.metadata, "fail")


def test_timer_context_manager(top):
    with top.timer("block"):
        sum(range(1000))
    assertTimed(top.metadata, "block")
    with pytest.raises(ZeroDivisionError), top.timer("broken"):
        1 / 0  # noqa: B018
    assertTimed(top.metadata, "broken")


def test_timer_logs_at_requested_level(top, caplog):
    with caplog.at_level(logging.INFO, logger="timer.top"), top.timer("block", logLevel=logging.INFO):
        pass
    messages = [r.getMessage() for r in caplog.records if r.name == "timer.top"]
    assert len(messages) == 2
    assert messages[0].startswith("blockStartCpuTime=") and messages[1].startswith("blockEndCpuTime=")


def test_getFullMetadata(top):
    top.run(1)
    top.metadata["item"] = "topItem"
    top.sub.metadata["item"] = "subItem"
    full = top.sub.sub2.getFullMetadata()  # same answer from any task in the hierarchy
    assert set(full.keys()) == {"top", "top:sub", "top:sub:sub2"}
    assert full["top.item"] == "topItem"
    assert full["top:sub.item"] == "subItem"
    assert full["top:sub:sub2.lastValue"] == 2
    assert full["top:sub:sub2"] is top.sub.sub2.metadata
    assert "top:sub:sub2.runEndCpuTime" in full
    assert full.paramNames(topLevelOnly=False) >= {"top.runEndUtc", "top:sub.runEndUtc"}


def test_emptyMetadata(top):
    top.run(1)
    top.sub.emptyMetadata()  # this task and below only
    assert len(top.sub.metadata) == 0 and len(top.sub.sub2.metadata) == 0
    assert "runEndUtc" in top.metadata
    top.run(1)
    top.emptyMetadata()
    for task in (top, top.sub, top.sub.sub2):
        assert len(task.metadata) == 0 and isinstance(task.metadata, TaskMetadata)


def test_schema_catalogs(top):
    class CatTask(Sub2Task):
        def getSchemaCatalogs(self):
            return {"cat": self.getFullName()}

    assert top.getSchemaCatalogs() == {} and top.getAllSchemaCatalogs() == {}
    config = TopConfig()
    config.sub.sub2.retarget(CatTask)
    task = TopTask(config=config)
    assert task.getAllSchemaCatalogs() == {"cat": "top.sub.sub2"}
    assert task.sub.getAllSchemaCatalogs() == {"cat": "top.sub.sub2"}


def test_makeField_and_retarget():
    field = SubTask.makeField("doc text")
    assert isinstance(field, pexConfig.ConfigurableField)
    assert field.target is SubTask and field.doc == "doc text"
    config = TopConfig()
    config.sub.retarget(AltSubTask)
    task = TopTask(config=config)
    assert type(task.sub) is AltSubTask and task.sub.getFullName() == "top.sub"
    assert task.run(2).value == -9
    assert type(task.sub.sub2) is Sub2Task


def test_makeSubtask_from_registry():
    registry = pexConfig.makeRegistry(doc="registry of subtasks")
    registry.register("plain", SubTask)
    registry.register("alt", AltSubTask)

    class registryConfig(pexConfig.Config):  # noqa: N801 - reads like the config it stands for
        sub = registry.makeField("a subtask from a registry")

    class RegistryTopTask(Task):
        ConfigClass = registryConfig
        _DefaultName = "rtop"

    config = registryConfig()
    config.sub.name = "alt"
    task = RegistryTopTask(config=config)
    task.makeSubtask("sub")
    assert type(task.sub) is AltSubTask
    assert task.sub.getFullName() == "rtop.sub" and task.sub.run(0).value == -3


def _roundTrip(obj):
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def test_task_pickle_round_trip(top):
    top.run(1)
    config = TopConfig()
    config.sub.sub2.factor = 5
    configured = TopTask(config=config, log=logging.getLogger("pipeline"))
    for original in (top, configured):
        restored = _roundTrip(original)
        del original
        gc.collect()  # nothing in the restored hierarchy may lean on the original
        for task, name, fullName in (
            (restored, "top", "top"),
            (restored.sub, "sub", "top.sub"),
            (restored.sub.sub2, "sub2", "top.sub.sub2"),
        ):
            assert (task.getName(), task.getFullName()) == (name, fullName)
            assert isinstance(task.log, logging.Logger)
            assert {k: v() for k, v in task.getTaskDict().items()} == {
                "top": restored,
                "top.sub": restored.sub,
                "top.sub.sub2": restored.sub.sub2,
            }
        assert restored.sub._parentTask is restored and restored.sub.sub2._parentTask is restored.sub
    # metadata and config travel with the task
    assert restored.sub.sub2.config.factor == 5 and restored.log.name == "pipeline.top"
    assert restored.run(1).value == 10
    assertTimed(restored.metadata, "run")
    assert set(restored.getFullMetadata().keys()) == {"top", "top:sub", "top:sub:sub2"}


def test_unpickled_task_keeps_earlier_metadata(top):
    top.run(1)
    restored = _roundTrip(top)
    assert restored.metadata == top.metadata
    restored.run(1)
    assertTimed(restored.metadata, "run", count=2)
    assertTimed(top.metadata, "run", count=1)  # the original is untouched


def test_subtask_pickle_round_trip(top):
    restored = _roundTrip(top.sub)
    assert type(restored) is SubTask
    assert (restored.getName(), restored.getFullName()) == ("sub", "top.sub")
    assert restored.log.name == "top.sub" and restored.sub2.log.name == "top.sub.sub2"
    assert restored._parentTask is None  # the parent does not travel
    assert set(restored.getTaskDict()) == {"top.sub", "top.sub.sub2"}
    assert restored.sub2._parentTask is restored
    assert restored.run(1).value == 6
    assertTimed(restored.metadata, "run")
    assertTimed(restored.sub2.metadata, "run")
    assert set(restored.getFullMetadata().keys()) == {"top:sub", "top:sub:sub2"}
    # the original hierarchy is untouched
    assert set(top.getTaskDict()) == {"top", "top.sub", "top.sub.sub2"}
    assert "runStartUtc" not in top.sub.metadata


def test_task_deepcopy_and_cyclic_pickle(top):
    clone = copy.deepcopy(top)
    assert clone.sub is not top.sub and clone.sub._parentTask is clone
    assert clone.getTaskDict()["top.sub.sub2"]() is clone.sub.sub2
    # A subtask holding a strong reference to its parent makes pickle restore
    # the parent before the subtask; the wiring must survive that order.
    top.sub.sub2.owner = top
    restored = _roundTrip(top.sub.sub2)
    assert restored.owner.sub.sub2 is restored
    assert restored.getTaskDict()["top.sub.sub2"]() is restored


def _runInWorker(task: TopTask) -> tuple[int, int, TaskMetadata]:
    """Run an unpickled task in another process and send back what it recorded."""
    result = task.run(1)
    return os.getpid(), result.value, task.getFullMetadata()


def test_task_runs_in_another_process(top):
    # "spawn" is what Dask's local cluster uses: nothing is inherited from this process.
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as pool:
        pid, value, full = pool.submit(_runInWorker, top).result(timeout=120)
    assert pid != os.getpid() and value == 6
    assert set(full.keys()) == {"top", "top:sub", "top:sub:sub2"}
    for name in ("top", "top:sub", "top:sub:sub2"):
        assertTimed(full[name], "run")
    assert "runStartUtc" not in top.metadata  # the worker ran a copy


def test_dropped_subtask(top):
    Sub2Task(config=Sub2Config(), name="temp", parentTask=top)  # registered, then dropped
    gc.collect()
    with pytest.raises(RuntimeError, match="garbage collection of subtask 'top.temp'"):
        top.getFullMetadata()
    restored = _roundTrip(top)  # pickling skips the dead entry
    assert set(restored.getTaskDict()) == {"top", "top.sub", "top.sub.sub2"}
