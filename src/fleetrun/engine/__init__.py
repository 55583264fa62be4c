"""The engine: walks an expanded graph within every limit, retries, cancels, emits events."""

from fleetrun.engine._clock import Clock, RealClock
from fleetrun.engine._control import RunControl
from fleetrun.engine._driver import run_graph
from fleetrun.engine._ending import NO_EXIT_CODE, distinct_tail, ending_text, repeats
from fleetrun.engine._events import (
    BACKOFF_PAUSED,
    BACKOFF_WHY,
    FINAL_STATES,
    AttemptEnded,
    AttemptOutput,
    AttemptStarted,
    Event,
    InstanceReused,
    InstanceSettled,
    PoolChanged,
    RunEnded,
    RunStarted,
    Subscriber,
    WaveChanged,
    left_running_text,
)
from fleetrun.engine._options import (
    DEFAULT_GRACE,
    FailFast,
    Mode,
    OutputMode,
    RunOptions,
    RunResult,
    new_run_id,
)
from fleetrun.engine._shared_file import (
    SharedPoolInfo,
    SharedPoolUser,
    check_pools_dir,
    read_shared_pools,
)
from fleetrun.engine._verdict import accepted_text

__all__ = [
    "BACKOFF_PAUSED",
    "BACKOFF_WHY",
    "DEFAULT_GRACE",
    "FINAL_STATES",
    "NO_EXIT_CODE",
    "AttemptEnded",
    "AttemptOutput",
    "AttemptStarted",
    "Clock",
    "Event",
    "FailFast",
    "InstanceReused",
    "InstanceSettled",
    "Mode",
    "OutputMode",
    "PoolChanged",
    "RealClock",
    "RunControl",
    "RunEnded",
    "RunOptions",
    "RunResult",
    "RunStarted",
    "SharedPoolInfo",
    "SharedPoolUser",
    "Subscriber",
    "WaveChanged",
    "accepted_text",
    "check_pools_dir",
    "distinct_tail",
    "ending_text",
    "left_running_text",
    "new_run_id",
    "read_shared_pools",
    "repeats",
    "run_graph",
]
