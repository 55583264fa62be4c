"""Fixtures for the compute-cluster tests: real Dask schedulers and workers on 127.0.0.1."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

# The compute cluster needs the `cluster` extra (pip install -e '.[test,cluster]').
# Off CI a missing extra skips these tests; under CI it fails them.
if os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
    pytest.importorskip("distributed")
    pytest.importorskip("kubernetes_validate")

from fleetrun.cluster import LocalCluster


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A scheduler and two worker processes shared by one test module."""
    c = LocalCluster(tmp_path_factory.mktemp("cluster"))
    c.start(2)
    try:
        yield c
    finally:
        c.stop(grace=5)
