"""A standalone, ``lsst.pipe.base``-compatible Task framework.

`Task`, `Struct` and `TaskMetadata` follow ``lsst.pipe.base`` closely enough for LSST
task code to port unchanged. Timing is LSST's own: `timeMethod` and `logInfo` are
re-exported from `lsst.utils.timer` and write into ``Task.metadata``.
"""

from lsst.utils.timer import logInfo, timeMethod

from ._struct import Struct
from ._task import Task, TaskError
from ._task_metadata import TaskMetadata

__all__ = ["Struct", "Task", "TaskError", "TaskMetadata", "logInfo", "timeMethod"]
