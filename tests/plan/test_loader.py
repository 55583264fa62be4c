"""Loading valid plans: table-driven facts, files, hashes, secrets and the schema."""

from __future__ import annotations

from typing import Any


def test_valid_case(valid_case: dict[str, Any], run_valid_case: Any) -> None:
    run_valid_case(valid_case)
