"""The verdict on an ended attempt: did it succeed, by the task's ``success`` rule?

Every executor reports how the command ended (``AttemptResult``); whether
that is a success is the engine's word, the same for local, SSH and cluster
attempts:

- an attempt that timed out, died of a signal, or never reported an exit code
  failed, whatever the rule says;
- otherwise its exit code must be one of ``success.exit`` (default: 0);
- and, with ``success.fail_on_output``, its log must not contain any of those
  texts (plain substrings, the log streamed in bounded chunks: ``log_contains``).

An accepted non-zero exit code stays what it is: the attempt succeeded with
``exit 3`` on record and ``exit 3 accepted`` as its reason (``accepted_text``).
A failure that the rule makes of an exit the executor took for success (exit
0 not listed, or output that fails it) carries the rule's words as its reason,
so every console and report says why.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from fleetrun.engine._retry import log_contains
from fleetrun.executors import AttemptResult
from fleetrun.plan import SuccessPolicy


def accepted_text(exit_code: int) -> str:
    """The words for a success with a non-zero exit code that ``success.exit`` lists."""
    return f"exit {exit_code} accepted"


@dataclass(frozen=True, slots=True)
class Verdict:
    """The engine's judgement of one ended attempt.

    ``ok``: it succeeded. ``result``: what the engine goes on with (for a
    failure the rule made, the executor's result with ``reason`` set to
    ``refused``). ``refused``: the rule's words for such a failure, else None.
    """

    ok: bool
    result: AttemptResult
    refused: str | None = None


def judge(policy: SuccessPolicy, result: AttemptResult, log_path: str) -> Verdict:
    """The verdict on ``result`` under ``policy``; reads the log at ``log_path``
    only when the policy has ``fail_on_output`` and the exit code is accepted."""
    code = result.exit_code
    if code is None or result.timed_out or result.error_kind is not None:
        return Verdict(False, result)
    if policy.is_default:
        return Verdict(code == 0, result)
    if code not in policy.exit:
        if code != 0:
            return Verdict(False, result)
        listed = ", ".join(map(str, sorted(policy.exit)))
        return _refused(result, f"exit 0, not a success code here (success.exit: {listed})")
    if policy.fail_on_output:
        found = log_contains(log_path, policy.fail_on_output)
        if found is not None:
            why = f"exit {code}, but the output has {found!r} (success.fail_on_output)"
            return _refused(result, why)
    return Verdict(True, result)


def _refused(result: AttemptResult, why: str) -> Verdict:
    # Outputs published with an exit 0 are not used when the rule fails it.
    return Verdict(False, dataclasses.replace(result, reason=why, outputs=None), why)
