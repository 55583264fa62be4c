"""Events read back from the journal are of the engine's own classes.

``dataclass(slots=True)`` makes a new class for each event and the first one
stays a subclass of ``Event`` until the garbage collector takes it. When the
decoders were built before it had (how early depended on what had been
imported), journaled events came back as that stale twin: ``isinstance`` said
no, and ``fleetrun watch`` printed no ``started`` lines. With the collector
off in a fresh process, the twins are sure to be there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_decoded_events_are_the_engine_classes_whatever_the_collector_did() -> None:
    code = textwrap.dedent(
        """
        import gc
        gc.disable()
        import dataclasses, json
        from fleetrun import engine
        from fleetrun.state import decode_event
        twins = [c for c in engine.Event.__subclasses__() if c.__name__ == "AttemptStarted"]
        ev = engine.AttemptStarted(
            at=1.0, node=0, attempt=1, key="t@a", command="x", pid=1, pgid=1, log_path="l"
        )
        fields = {f.name: getattr(ev, f.name) for f in dataclasses.fields(ev)}
        back = decode_event("AttemptStarted", json.dumps(fields))
        print(len(twins), type(back) is engine.AttemptStarted, back == ev)
        """
    )
    ran = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    twins, same, equal = ran.stdout.split()
    assert int(twins) >= 2  # the stale twin is there: the case this guards
    assert (same, equal) == ("True", "True")
