"""``fleetrun cluster up --local`` / status / scale / down, with real processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from fleetrun.cli._main import cli
from fleetrun.cluster import LocalCluster, local_dir


def _cli(args: list[str]) -> object:
    # Nothing of the caller's environment points at another cluster.
    env: dict[str, str | None] = {"FLEETRUN_CLUSTER": None, "IMAGE_REPO": None,
                                  "COORDINATOR_EP": None}  # fmt: skip
    return CliRunner(env=env).invoke(cli, args, catch_exceptions=False)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_local_cluster_up_status_scale_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no cluster.yaml here
    state = tmp_path / "state"
    up = _cli(["cluster", "up", "--local", "--workers", "2", "--state-dir", str(state)])
    try:
        assert up.exit_code == 0, up.output  # type: ignore[attr-defined]
        directory = local_dir(state)
        record = json.loads((directory / "cluster.json").read_text())
        assert oct((directory / "cluster.json").stat().st_mode & 0o777) == "0o600"
        # Every folder it made on the way is owner-only: <state>/cluster too.
        for made in (directory, directory.parent):
            assert oct(made.stat().st_mode & 0o777) == "0o700", made
        assert record["address"] in up.output  # type: ignore[attr-defined]

        st = _cli(["cluster", "status", "--format", "json", "--state-dir", str(state)])
        info = json.loads(st.output)  # type: ignore[attr-defined]
        pids = sorted(w["pid"] for w in info["workers"])
        assert pids == sorted(w["pid"] for w in record["workers"])
        assert [w["resources"] for w in info["workers"]] == [{"MACHINE": 1.0}] * 2
        assert [w["job"] for w in info["workers"]] == [None, None]
        assert info["queued"] == []

        again = _cli(["cluster", "up", "--local", "--state-dir", str(state)])
        assert again.exit_code == 2  # type: ignore[attr-defined]

        sc = _cli(["cluster", "scale", "3", "--state-dir", str(state)])
        assert sc.exit_code == 0, sc.output  # type: ignore[attr-defined]
        sc = _cli(["cluster", "scale", "1", "--state-dir", str(state)])
        assert "1 workers" in sc.output  # type: ignore[attr-defined]
        table = _cli(["cluster", "status", "--state-dir", str(state)])
        assert "1 workers" in table.output  # type: ignore[attr-defined]
        everything = (
            [p["pid"] for p in json.loads((directory / "cluster.json").read_text())["workers"]]
            + pids
            + [record["scheduler"]["pid"]]
        )
    finally:
        down = _cli(["cluster", "down", "--state-dir", str(state)])
    assert down.exit_code == 0, down.output  # type: ignore[attr-defined]
    assert "nothing of it is left" in down.output  # type: ignore[attr-defined]
    assert not any(_alive(p) for p in everything)
    assert not local_dir(state).exists()
    missing = _cli(["cluster", "down", "--local", "--state-dir", str(state)])
    assert missing.exit_code == 2  # type: ignore[attr-defined]
    assert "no local cluster is recorded" in missing.output  # type: ignore[attr-defined]
    # Status after down: no cluster is up (one line, exit 2), not a configuration error.
    after = _cli(["cluster", "status", "--state-dir", str(state)])
    assert after.exit_code == 2, after.output  # type: ignore[attr-defined]
    lines = after.output.splitlines()  # type: ignore[attr-defined]
    assert len(lines) == 1, lines
    assert lines[0].startswith("error: no cluster is up: no local cluster is recorded in "), lines
    assert "IMAGE_REPO" not in lines[0]
    assert not os.path.exists(local_dir(state) / "cluster.json")
    assert LocalCluster  # the public name used above
