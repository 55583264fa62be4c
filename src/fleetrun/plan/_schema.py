"""JSON Schema (draft 2020-12) of the plan file, for editors and documentation.

The schema describes the shape of a plan; the loader checks more (references
between sections, cycles, templates), so a file can match the schema and still
be rejected with a precise message. Editors using YAML 1.2 (yaml-language-server)
read ``on:`` as the string key it is in fleetrun.
"""

from __future__ import annotations

import copy
from typing import Any

from fleetrun.durations import DURATION_PATTERN
from fleetrun.plan._cluster import RESOURCE_NAME
from fleetrun.plan._limits_read import SHARED_NAME
from fleetrun.plan._model import MAX_ATTEMPTS, MAX_ATTEMPTS_WHY
from fleetrun.redact import DEFAULT_SECRET_NAME_PATTERNS
from fleetrun.runs_on import DEFAULT_KIND, KINDS, OptionType, option_keys

SCHEMA_ID = "https://fleetrun.dev/schema/plan.json"

_NAME = "^[A-Za-z_][A-Za-z0-9_-]*$"
_ENV_NAME = "^[A-Za-z_][A-Za-z0-9_]*$"
_DURATION_TEXT = DURATION_PATTERN
_RATE_TEXT = r"^\s*\d+(\.\d+)?\s*/\s*(s|m|h|sec|second|min|minute|hour)\s*$"
_NEED_TEXT = r"^\s*[A-Za-z_][A-Za-z0-9_-]*\s*(\[\s*\*\s*\])?\s*$"

_SCALAR: dict[str, Any] = {"type": ["string", "number", "integer", "boolean", "null"]}


def _duration(description: str) -> dict[str, Any]:
    return {
        "description": description + " A duration: 30s, 5m, 1h30m, 250ms, or seconds as a number.",
        "anyOf": [
            {"type": "number", "minimum": 0},
            {"type": "string", "pattern": _DURATION_TEXT},
        ],
    }


def _obj(description: str, props: dict[str, Any], required: tuple[str, ...] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {
        "type": "object",
        "description": description,
        "properties": props,
        "additionalProperties": False,
    }
    if required:
        out["required"] = list(required)
    return out


def _retry() -> dict[str, Any]:
    on = _obj(
        "Which failures are retried. Without 'on', every failure is retried.",
        {
            "exit": {
                "description": "Exit codes that are retried.",
                "anyOf": [
                    {"type": "integer", "minimum": 0},
                    {"type": "array", "items": {"type": "integer", "minimum": 0}},
                ],
            },
            "output": {
                "description": "Retry when the output contains any of these texts "
                "(plain substrings, not regular expressions; for example '429' or "
                "'Too Many Requests'). A pool's throttle.output takes regexes.",
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            },
            "timeout": {"type": "boolean", "description": "Retry attempts that timed out."},
            "connect": {
                "type": "boolean",
                "description": "Retry attempts that could not reach their target or lost the "
                "connection (SSH: unreachable, refused, handshake dropped, connection lost).",
            },
        },
    )
    on["minProperties"] = 1
    policy = _obj(
        "Retry policy. Keys given by a task override the same keys of defaults.retry.",
        {
            "attempts": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_ATTEMPTS,
                "description": "Attempts in all, the first included (1 = no retry; at most "
                f"{MAX_ATTEMPTS}: {MAX_ATTEMPTS_WHY}).",
            },
            "backoff": _duration(
                "Base delay: before attempt n+1 fleetrun waits a random time up to "
                "min(max_backoff, backoff * 2^(n-1))."
            ),
            "max_backoff": _duration("Longest delay between two attempts."),
            "on": on,
        },
    )
    return {
        "description": "Retry policy, or just the number of attempts.",
        "anyOf": [{"type": "integer", "minimum": 1, "maximum": MAX_ATTEMPTS}, policy],
    }


def _success() -> dict[str, Any]:
    return _obj(
        "What counts as success for an attempt (default: exit 0). The engine judges, the "
        "same for every runs_on. Keys given by a task override the same keys of "
        "defaults.success. Timeouts and signals are failures whatever this says.",
        {
            "exit": {
                "description": "Every exit code that counts as success, for example [0, 3] for "
                "a status check whose 'stopped' is 3 (0 included only when listed). An "
                "accepted non-zero code is recorded as it is: 'exit 3 accepted'. Outputs "
                "($FLEETRUN_OUTPUT) are published by an exit 0 only.",
                "anyOf": [
                    {"type": "integer", "minimum": 0, "maximum": 255},
                    {
                        "type": "array",
                        "items": {"type": "integer", "minimum": 0, "maximum": 255},
                        "minItems": 1,
                    },
                ],
            },
            "fail_on_output": {
                "description": "An attempt whose output contains any of these texts fails, "
                "whatever its exit code (plain substrings, as retry.on.output, not regular "
                "expressions; for example 'ERROR'). Such a failure is retried as retry says.",
                "anyOf": [
                    {"type": "string", "minLength": 1},
                    {"type": "array", "items": {"type": "string", "minLength": 1}},
                ],
            },
        },
    )


def _adaptive() -> dict[str, Any]:
    def num(description: str, maximum: float = 1.0) -> dict[str, Any]:
        return {
            "type": "number",
            "exclusiveMinimum": 0,
            "maximum": maximum,
            "description": description,
        }

    return {
        "description": "Follow what the provider grants: on throttle signals the effective "
        "rate and concurrency come down, while nothing is throttled they grow back slowly; "
        "the configured values are ceilings. true: the default numbers.",
        "anyOf": [
            {"type": "boolean"},
            _obj(
                "The adaptive algorithm's numbers (each optional).",
                {
                    "decrease": {
                        "type": "number",
                        "exclusiveMinimum": 0,
                        "exclusiveMaximum": 1,
                        "description": "A throttle near the limit multiplies the rate by this "
                        "(default 0.9); one soon after a fresh start halves it.",
                    },
                    "max_drop": num("One decrease keeps at least this fraction (default 0.2)."),
                    "increase": num(
                        "Step of probing past the plateau: 1, 3, 5 ... x this (default 0.02)."
                    ),
                    "probe": num("Seconds between two increases (default 1).", 3600),
                    "floor": num(
                        "Never below this fraction of the configured values (default 0.01)."
                    ),
                    "hold": num(
                        "Seconds at the plateau before probing past it; doubles after each "
                        "failed probe, up to 16x (default 5).",
                        3600,
                    ),
                    "margin": num(
                        "How far under a limit found the plateau sits (default 0.03).", 0.5
                    ),
                    "initial": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "The concurrency slow start begins at (default 8).",
                    },
                    "verify": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Attempts watched after a decrease to check it helped; "
                        "if the throttles did not follow the rate, it is undone (default 10).",
                    },
                },
            ),
        ],
    }


def _throttle() -> dict[str, Any]:
    return _obj(
        "What 'slow down' looks like. Only these signals change an adaptive pool's limits; "
        "a throttled attempt is retried whatever retry.on says. Default for an adaptive pool "
        "without one: exit 75, output '\\b429\\b' or 'too many requests', "
        "'retry-after: (N)'.",
        {
            "exit": {
                "description": "Exit codes that mean throttled.",
                "anyOf": [
                    {"type": "integer", "minimum": 1},
                    {"type": "array", "items": {"type": "integer", "minimum": 1}},
                ],
            },
            "output": {
                "description": "Regular expressions (Python re, searched line by line); "
                "an attempt whose output matches one was throttled.",
                "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}],
            },
            "retry_after": {
                "type": "string",
                "description": "A regular expression whose first group is a delay in seconds "
                "(e.g. 'Retry-After: (\\d+)'): no attempt of the pool starts before it passed.",
            },
            "attempts": {
                "type": "integer",
                "minimum": 1,
                "maximum": MAX_ATTEMPTS,
                "description": "Attempts a throttled instance gets at least (default 5; the "
                "task's retry.attempts when larger).",
            },
        },
    )


def _rollout() -> dict[str, Any]:
    pct = {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"}
    return _obj(
        "Rolling waves: a target's instances start only once its wave is open. A wave opens "
        "when the earlier waves have settled within max_failed (and, with pause, on promote). "
        "Tasks not fanned over targets are not held.",
        {
            "waves": {
                "type": "array",
                "minItems": 1,
                "description": "Wave sizes in order, the last one repeating: a group name, a "
                "count, or a percentage of the fleet ('25%', truncated, at least 1).",
                "items": {"anyOf": [{"type": "integer", "minimum": 1}, pct, {"type": "string"}]},
            },
            "max_failed": {
                "description": "Failed targets allowed per wave (a count or a percentage of "
                "the wave); strictly more halts the rollout. Default 0.",
                "anyOf": [{"type": "integer", "minimum": 0}, pct],
            },
            "pause": {
                "type": "boolean",
                "description": "Wait for a promote before each next wave (default false).",
            },
        },
        required=("waves",),
    )


def _need() -> dict[str, Any]:
    return {
        "description": "A dependency. 'X': the same target's instance of X when both tasks "
        "fan out over targets, otherwise every instance of X. 'X[*]': every instance. "
        "{task: X, at_least: N or 'P%'}: a quorum of X's instances.",
        "anyOf": [
            {"type": "string", "pattern": _NEED_TEXT},
            _obj(
                "A dependency on another task, optionally a quorum of its instances.",
                {
                    "task": {"type": "string", "pattern": _NAME, "description": "The task."},
                    "at_least": {
                        "description": "How many instances must succeed: a count (1 up to "
                        "the instance count) or a percentage in (0%, 100%] rounded up.",
                        "anyOf": [
                            {"type": "integer", "minimum": 1},
                            {"type": "string", "pattern": r"^\s*\d+(\.\d+)?\s*%\s*$"},
                        ],
                    },
                },
                required=("task",),
            ),
        ],
    }


_OPTION_TYPES: dict[OptionType, dict[str, Any]] = {
    "boolean": {"type": "boolean"},
    "resources": {
        "type": "object",
        "propertyNames": {"pattern": RESOURCE_NAME.pattern},
        "additionalProperties": {"type": "number", "exclusiveMinimum": 0},
    },
}
"""The JSON Schema of each option type of ``fleetrun.runs_on``."""


def _runs_on() -> dict[str, Any]:
    where = "; ".join(f"'{k.name}', {k.where}" for k in KINDS.values())
    return {
        "type": "string",
        "enum": list(KINDS),
        "description": f"Where each attempt runs: {where}.",
    }


def _executor_options() -> dict[str, Any]:
    """The task keys executor kinds own, from their options classes."""
    return {
        name: {
            **copy.deepcopy(_OPTION_TYPES[decl.type]),
            "description": f"(runs_on: {' or '.join(owners)}) {decl.description}",
        }
        for name, (decl, owners) in option_keys().items()
    }


def _option_rules() -> list[dict[str, Any]]:
    """A task that gives a kind's key runs on that kind (no ``runs_on``: the default)."""
    rules = []
    for name, (_, owners) in option_keys().items():
        runs_on = {
            "enum": list(owners),
            "description": f"{name} is read only by runs_on: {' or '.join(owners)}.",
        }
        then: dict[str, Any] = {"properties": {"runs_on": runs_on}}
        if DEFAULT_KIND not in owners:
            then["required"] = ["runs_on"]
        rules.append({"if": {"required": [name]}, "then": then})
    return rules


def _task() -> dict[str, Any]:
    task = _obj(
        "One task: a shell command, run once or once per target of a group.",
        {
            "run": {
                "type": "string",
                "minLength": 1,
                "description": "Shell command. Templates: {{ target.name }}, "
                "{{ target.<attribute> }}, {{ vars.<name> }}, {{ tasks.<task>.outputs.<key> }}; "
                'inserted values are quoted for where they stand (bare word, inside "..." or '
                "'...') unless written {{ raw ... }}; a placeholder in a here-document, a "
                "comment, backticks or $((...)) is refused.",
            },
            "description": {"type": "string", "description": "What the task does."},
            "phase": {
                "type": "string",
                "description": "The phase the task belongs to (one of 'phases' when given).",
            },
            "for_each": {
                "type": "string",
                "description": "Fan out: one instance per target of this group ('all' = every "
                "target). Without it the task runs once.",
            },
            "needs": {
                "description": "Tasks that must succeed first.",
                "anyOf": [{"type": "array", "items": _need()}, {"type": "string"}],
            },
            "pools": {
                "description": "Pools whose limits every attempt of this task draws on.",
                "anyOf": [
                    {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                    {"type": "string"},
                ],
            },
            "timeout": _duration("Per-attempt time limit (default: defaults.timeout, or none)."),
            "retry": _retry(),
            "success": _success(),
            "env": {
                "type": "object",
                "description": "Environment variables for this task (over the plan's env).",
                "propertyNames": {"pattern": _ENV_NAME},
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
            "cwd": {
                "type": "string",
                "description": "Working directory, relative to the plan file's directory.",
            },
            "estimate": _duration(
                "Expected duration, for critical paths and makespan estimates (default 1s)."
            ),
            "runs_on": _runs_on(),
            **_executor_options(),
            "script": {
                "type": "string",
                "minLength": 1,
                "description": "Instead of 'run': a local script (path relative to the plan) "
                "and its arguments, templated and quoted like 'run'. With runs_on: ssh it is "
                "streamed to the remote shell (no copy, no file left behind).",
            },
            "allow_empty": {
                "type": "boolean",
                "description": "With for_each: the group may match no target (zero instances). "
                "Default false: apply refuses a task with no instances.",
            },
        },
    )
    task["oneOf"] = [{"required": ["run"]}, {"required": ["script"]}]
    task["allOf"] = _option_rules()
    return task


def _ssh(description: str, *, with_string: bool) -> dict[str, Any]:
    settings = _obj(
        description,
        {
            "host": {
                "type": "string",
                "description": "Host name or address (or a Host alias of ~/.ssh/config); "
                "user@host:port is accepted too. Default: the target's name.",
            },
            "port": {
                "type": "integer",
                "minimum": 1,
                "maximum": 65535,
                "description": "SSH port (default: ~/.ssh/config, else 22).",
            },
            "user": {"type": "string", "description": "Remote user (default: ~/.ssh/config)."},
            "identity_file": {
                "type": "string",
                "description": "Private key file (relative to the plan); default: the agent "
                "and ~/.ssh/config. No passwords.",
            },
            "known_hosts": {
                "type": "string",
                "description": "known_hosts file checked strictly (default: ~/.ssh/config's, "
                "else ~/.ssh/known_hosts); 'accept-new' or 'accept-new:PATH' trusts a host "
                "with no key on record and appends its key. A changed key is always refused.",
            },
            "jump": {
                "type": "string",
                "description": "Jump host(s), user@host:port[,...] (like ProxyJump).",
            },
            "config_file": {
                "type": "string",
                "description": "OpenSSH client config to read instead of ~/.ssh/config.",
            },
            "connect_timeout": _duration(
                "Bound on DNS, TCP, key exchange, authentication and opening a session "
                "(default 10s)."
            ),
        },
    )
    if not with_string:
        return settings
    return {
        "description": description,
        "anyOf": [
            {"type": "string", "description": "[user@]host[:port]"},
            settings,
        ],
    }


def _build() -> dict[str, Any]:
    targets_map = {
        "type": "object",
        "description": "Target name -> attributes (scalars), or null for none.",
        "additionalProperties": {
            "anyOf": [
                {
                    "type": "object",
                    "propertyNames": {"pattern": _NAME, "not": {"const": "name"}},
                    "properties": {
                        "ssh": _ssh(
                            "How to reach the target over SSH (runs_on: ssh), over the "
                            "plan's 'ssh' defaults.",
                            with_string=True,
                        )
                    },
                    "additionalProperties": _SCALAR,
                },
                {"type": "null"},
            ]
        },
    }
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        "title": "fleetrun plan",
        "description": "A fleetrun plan: a fleet of targets and the tasks to run across it.",
        "type": "object",
        "additionalProperties": False,
        "required": ["tasks"],
        "properties": {
            "name": {"type": "string", "description": "Name of the plan (default: file name)."},
            "ssh": _ssh(
                "SSH settings every target's own 'ssh' is laid over (user, port, "
                "identity_file, known_hosts, jump, config_file, connect_timeout).",
                with_string=False,
            ),
            "description": {"type": "string", "description": "What the plan does."},
            "env_file": {
                "type": "string",
                "description": "File of KEY=VALUE lines (export prefix, comments and quotes "
                "allowed), relative to the plan; given to every task's environment.",
            },
            "env": {
                "type": "object",
                "description": "Environment variables for every task (over env_file).",
                "propertyNames": {"pattern": _ENV_NAME},
                "additionalProperties": {"type": ["string", "number", "boolean"]},
            },
            "secrets": {
                "type": "array",
                "items": {"type": "string", "pattern": _ENV_NAME},
                "uniqueItems": True,
                "description": "Environment variable names whose values are redacted from "
                "logs, journal and terminal (also taken from fleetrun's own environment).",
            },
            "secret_patterns": {
                "type": "array",
                "items": {"type": "string"},
                "default": list(DEFAULT_SECRET_NAME_PATTERNS),
                "description": "Environment names containing one of these texts (or matching "
                "one of these globs, such as '*_PASSWORD') are secret too.",
            },
            "vars": {
                "type": "object",
                "description": "Values for templates: {{ vars.<name> }}. Each a scalar, or "
                "{value, secret, env}: 'env' takes the value from fleetrun's environment, "
                "'secret' masks it everywhere. --var NAME=VALUE / --var-file FILE override.",
                "propertyNames": {"pattern": _NAME},
                "additionalProperties": {
                    "anyOf": [
                        _SCALAR,
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "properties": {
                                "value": {**_SCALAR, "description": "The value."},
                                "secret": {
                                    "type": "boolean",
                                    "description": "Mask the value everywhere (***).",
                                },
                                "env": {
                                    "type": "string",
                                    "description": "Take the value from this variable of "
                                    "fleetrun's environment.",
                                },
                            },
                        },
                    ]
                },
            },
            "targets": {
                "description": "The fleet: inline mapping of target name -> attributes, or the "
                "path (relative to the plan) of a YAML file holding that mapping.",
                "anyOf": [targets_map, {"type": "string"}],
            },
            "groups": {
                "type": "object",
                "description": "Named sets of targets; 'all' is reserved for every target.",
                "propertyNames": {"pattern": _NAME, "not": {"const": "all"}},
                "additionalProperties": {
                    "anyOf": [
                        {
                            "type": "array",
                            "items": {"type": "string"},
                            "uniqueItems": True,
                            "description": "Target names.",
                        },
                        _obj(
                            "Selection by attributes.",
                            {
                                "where": {
                                    "type": "string",
                                    "description": "Expression over target attributes: == != "
                                    "< <= > >= in [..] not in [..] and or not, parentheses, "
                                    "'text', numbers, true, false, null; 'name' is the target "
                                    "name; a missing attribute is null.",
                                }
                            },
                            required=("where",),
                        ),
                    ]
                },
            },
            "pools": {
                "type": "object",
                "description": "Shared limits that tasks draw on (a task may use several).",
                "propertyNames": {"pattern": _NAME},
                "additionalProperties": {
                    **_obj(
                        "A pool: concurrent slots and/or a start rate.",
                        {
                            "concurrency": {
                                "type": "integer",
                                "minimum": 1,
                                "description": "At most this many attempts at once.",
                            },
                            "rate": {
                                "description": "At most this many starts per time unit: 10/s, "
                                "600/m, 100/h (a number is per second).",
                                "anyOf": [
                                    {"type": "number", "exclusiveMinimum": 0},
                                    {"type": "string", "pattern": _RATE_TEXT},
                                ],
                            },
                            "burst": {
                                "type": "integer",
                                "minimum": 1,
                                "description": "Starts allowed at once under the rate "
                                "(token bucket size, default 1).",
                            },
                            "adaptive": _adaptive(),
                            "throttle": _throttle(),
                            "shared": {
                                "type": "string",
                                "pattern": SHARED_NAME.pattern,
                                "description": "Share this pool with every run that names "
                                "the same shared pool in the same state directory: one "
                                "concurrency, rate, Retry-After pause and adaptive state "
                                "between them (`fleetrun pools` shows it). The first run "
                                "that opens it sets its limits until its last user leaves.",
                            },
                        },
                    ),
                    "anyOf": [{"required": ["concurrency"]}, {"required": ["rate"]}],
                },
            },
            "rollout": _rollout(),
            "defaults": _obj(
                "Values every task gets unless it sets its own.",
                {
                    "timeout": _duration("Per-attempt time limit."),
                    "retry": _retry(),
                    "success": _success(),
                    "estimate": _duration("Expected duration of a task."),
                },
            ),
            "phases": {
                "type": "array",
                "items": {"type": "string", "pattern": _NAME},
                "uniqueItems": True,
                "description": "Phase order (for --mode phased and for checks: a task may not "
                "need a task of a later phase). Default: order of first use.",
            },
            "cluster": _obj(
                "Where runs_on: cluster jobs go (--cluster and FLEETRUN_CLUSTER override "
                "address). Without an address, a local cluster is started for the run.",
                {
                    "address": {
                        "type": "string",
                        "description": "A running Dask scheduler: tcp://HOST:PORT or HOST:PORT.",
                    },
                    "workers": {
                        "type": "integer",
                        "minimum": 1,
                        "description": "Worker processes of the local cluster (default 2).",
                    },
                },
            ),
            "tasks": {
                "type": "object",
                "minProperties": 1,
                "description": "Task name -> task, in plan order.",
                "propertyNames": {"pattern": _NAME},
                "additionalProperties": _task(),
            },
        },
    }


_SCHEMA = _build()


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a plan file; a fresh copy on every call."""
    return copy.deepcopy(_SCHEMA)
