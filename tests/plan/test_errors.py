"""Every rule of the plan format, as table-driven cases of plan -> exact diagnostics.

The cases live in ``cases/*.yaml`` (entries with ``errors``); see ``conftest.py``
for the format.
"""

from __future__ import annotations

from typing import Any


def test_error_case(error_case: dict[str, Any], run_error_case: Any) -> None:
    run_error_case(error_case)
