"""The plan file as written: frozen pydantic models, one per section.

These models are the one description of the plan's keys: ``fleetrun schema``
prints their JSON Schema (``plan_json_schema``), the loader takes the key set
of every section from them and validates sections with them (``_validate.py``
maps pydantic's errors back to file:line:column). Units are parsed here by
validators that use the same functions as the rest of fleetrun
(``fleetrun.durations``, ``_units.parse_rate``), so the schema describes the
accepted forms (a number, or a string with a pattern).

The schema describes the shape of a plan; the loader checks more (references
between sections, cycles, templates, regular expressions, files), so a file can
match the schema and still be rejected with a precise message. Editors using
YAML 1.2 (yaml-language-server) read ``on:`` as the string key it is in fleetrun.
"""

from __future__ import annotations

import copy
import functools
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Annotated, Any, ClassVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)
from pydantic.json_schema import GenerateJsonSchema, JsonSchemaValue
from pydantic_core import PydanticCustomError, core_schema

from fleetrun.durations import DURATION_HELP, DURATION_PATTERN, parse_duration
from fleetrun.plan._fields import did_you_mean
from fleetrun.plan._model import MAX_ATTEMPTS, MAX_ATTEMPTS_WHY
from fleetrun.plan._units import (
    MAX_DURATION,
    MAX_RATE,
    MIN_RATE,
    in_digits,
    parse_rate,
    rate_problem,
)
from fleetrun.plan._written import as_written
from fleetrun.redact import DEFAULT_SECRET_NAME_PATTERNS
from fleetrun.runs_on import DEFAULT_KIND, KINDS, RUNS_ON, option_keys, scheduler_address_problem

SCHEMA_ID = "https://fleetrun.dev/schema/plan.json"
NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_-]*$"
ENV_NAME_PATTERN = "^[A-Za-z_][A-Za-z0-9_]*$"
RESOURCE_NAME_PATTERN = r"^[A-Za-z_][\w.-]*$"
SHARED_NAME_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
RATE_PATTERN = r"^\s*\d+(\.\d+)?\s*/\s*(s|m|h|sec|second|min|minute|hour)\s*$"
NEED_PATTERN = r"^\s*[A-Za-z_][A-Za-z0-9_-]*\s*(\[\s*\*\s*\])?\s*$"
PERCENT_PATTERN = r"^\s*\d+(\.\d+)?\s*%\s*$"
MAX_EXIT = 255
"""The largest exit status a process can report (POSIX keeps 8 bits)."""
MAX_COUNT = 1_000_000
"""The largest concurrency, burst or worker count: far past what one run starts,
and a count the journal and the shared pools file keep as a 64-bit integer."""
MAX_VERIFY = 10_000
"""The largest ``adaptive.verify``: the pool keeps that many attempts' endings in memory."""


@dataclass(frozen=True)
class Why:
    """Why a number may go no higher than its maximum (said in the error's fix);
    metadata of an ``Annotated`` type."""

    text: str


@dataclass(frozen=True)
class Expect:
    """How a value of several shapes is named when it has none of them
    (``a task name or {task: name, at_least: N}``); ``text``: a string would have
    done, so an unquoted ``on`` or ``010`` is said to be read by YAML as something
    else. Metadata of an ``Annotated`` type."""

    words: str
    text: bool = False


SHARED_RULE = (
    "at most 64 ASCII letters, digits, '.', '_' and '-', starting with an ASCII letter or digit"
)
SHARED_HELP = f"use {SHARED_RULE}, such as azure-subscription-1"
SHARED_MAX = 64
"""The longest shared pool name (``SHARED_NAME_PATTERN`` says the same)."""


def problem(kind: str, message: str, fix: str) -> PydanticCustomError:
    """An error of a validator, in the plan's words: ``message`` and ``fix`` are said as
    they are (``_validate`` places them in the file)."""
    return PydanticCustomError(kind, "{message}", {"message": message, "fix": fix})


class _Spec(BaseModel):
    """A section of the plan: unknown keys are errors, values are not coerced, and an
    optional key written as null is refused (leave the key out instead)."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, defer_build=True)
    _nullable: ClassVar[frozenset[str]] = frozenset()
    _missing: ClassVar[dict[str, tuple[str, str]]] = {}
    """A required key left out: the message and the fix, by key."""

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: object, info: Any) -> object:
        if value is None and info.field_name not in cls._nullable:
            raise PydanticCustomError("null", "null is not a value of this key")
        return value


def _no_null(schema: dict[str, Any]) -> None:
    """An optional key that may not be written as null: drop pydantic's null branch."""
    branches = schema.get("anyOf")
    if isinstance(branches, list):
        kept = [b for b in branches if b != {"type": "null"}]
        if len(kept) == 1:
            del schema["anyOf"]
            schema.update(kept[0])
        else:
            schema["anyOf"] = kept
    schema.pop("default", None)


def key(description: str, *, nullable: bool = False, **kw: Any) -> Any:
    """An optional key: absent is None, an explicit null is refused, unless ``nullable``
    (a list or mapping whose entries are all commented out: null means empty; the model
    lists it in ``_nullable`` too)."""
    extra = kw.pop("json_schema_extra", None)

    def schema_extra(schema: dict[str, Any]) -> None:
        if not nullable:
            _no_null(schema)
        # Said beside a $ref too (pydantic leaves out one equal to the model's docstring).
        schema["description"] = description
        if extra:
            schema.update(extra)

    return Field(None, description=description, json_schema_extra=schema_extra, **kw)


# --- units --------------------------------------------------------------------------


def _seconds(value: object) -> object:
    if isinstance(value, float | int | str) and not isinstance(value, bool):
        seconds = parse_duration(value)
        if seconds is not None:
            return _at_most_a_year(value, seconds)
    raise problem("duration", f"{as_written(value)} is not a duration", DURATION_HELP)


def _positive_seconds(value: object) -> object:
    if isinstance(value, float | int | str) and not isinstance(value, bool):
        seconds = parse_duration(value)
        if seconds is not None and seconds > 0:
            return _at_most_a_year(value, seconds)
        if seconds is not None:
            raise problem("duration_zero", "must be longer than zero", DURATION_HELP)
    raise problem("duration_positive", f"{as_written(value)} is not a duration", DURATION_HELP)


def _at_most_a_year(value: object, seconds: float) -> float:
    if seconds > MAX_DURATION:  # infinity too
        raise problem(
            "duration_range",
            f"{as_written(value)} is over a year, the longest duration a plan takes",
            "write at most 365d, such as 30s, 5m, 1h30m or 2d (a plain number is seconds)",
        )
    return seconds


def _rate(value: object) -> object:
    rate = parse_rate(value)
    if rate is None:
        raise problem("rate", *rate_problem(value))
    return rate


Duration = Annotated[
    float,
    BeforeValidator(_seconds),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0, "maximum": MAX_DURATION},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]
"""Seconds, written 30s, 5m, 1h30m, 250ms or as a plain number; at most ``MAX_DURATION``."""

PositiveDuration = Annotated[
    float,
    BeforeValidator(_positive_seconds),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": MAX_DURATION},
                {"type": "string", "pattern": DURATION_PATTERN},
            ]
        }
    ),
]
"""A duration longer than zero (a time limit)."""

Rate = Annotated[
    float,
    BeforeValidator(_rate),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": MIN_RATE, "maximum": MAX_RATE},
                {"type": "string", "pattern": RATE_PATTERN},
            ]
        }
    ),
]
"""Starts per second, written 10/s, 600/m or 100/h (a plain number is per second),
from ``MIN_RATE`` (one a day) to ``MAX_RATE``."""

_DURATION_WORDS = " A duration: 30s, 5m, 1h30m, 250ms, or seconds as a number."


def duration(description: str) -> Any:
    """An optional duration key."""
    return key(description + _DURATION_WORDS)


def is_duration(tp: Any) -> bool:
    """Whether a field's type is (or may be) a ``Duration``."""
    return (
        "Duration" in repr(tp)
        or any(
            isinstance(m, BeforeValidator) and m.func in (_seconds, _positive_seconds)
            for m in getattr(tp, "__metadata__", ())
        )
        or any(is_duration(a) for a in getattr(tp, "__args__", ()))
    )


Name = Annotated[str, Field(pattern=NAME_PATTERN)]
GroupName = Annotated[
    str,
    Field(pattern=NAME_PATTERN),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN, "not": {"const": "all"}}),
]
Percent = Annotated[str, Field(pattern=PERCENT_PATTERN)]
Scalar = str | int | float | bool | None


def _text(value: str) -> str:
    if not value.strip():
        raise problem("empty", "must not be empty", "write a value, or remove the key")
    return value


Text = Annotated[
    str,
    AfterValidator(_text),
    WithJsonSchema({"type": "string", "minLength": 1, "pattern": r"\S"}),
]
"""A string with something in it (not only blanks)."""


def _matching(pattern: str, kind: str, what: str, fix: str) -> Any:
    """A string matched whole by ``pattern``; else ``'x' is not <what>``."""
    compiled = re.compile(pattern)

    def check(text: str) -> str:
        if not compiled.fullmatch(text):
            raise problem(kind, f"{as_written(text)} is not {what}", fix)
        return text

    return AfterValidator(check)


EnvName = Annotated[
    str,
    _matching(
        ENV_NAME_PATTERN,
        "env_name",
        "a valid environment variable name",
        "use letters, digits and '_', not starting with a digit",
    ),
    WithJsonSchema({"type": "string", "pattern": ENV_NAME_PATTERN}),
]
NAME_HELP = "use letters, digits, '_' and '-', starting with a letter or '_'"
PhaseName = Annotated[
    str,
    _matching(NAME_PATTERN, "name", "a valid phase name", NAME_HELP),
    WithJsonSchema({"type": "string", "pattern": NAME_PATTERN}),
]
EnvValue = Annotated[str | int | float | bool, Expect("a string", text=True)]
"""An environment value: numbers and booleans are given as written (``yes`` stays yes)."""
Attempts = Annotated[int, Field(ge=1, le=MAX_ATTEMPTS), Why(MAX_ATTEMPTS_WHY)]
ExitCode = Annotated[int, Field(ge=0, le=MAX_EXIT), Why("exit codes are 0 to 255")]
FailureExit = Annotated[
    int, Field(ge=1, le=MAX_EXIT), Why("a failed attempt's exit codes are 1 to 255")
]
Count = Annotated[
    int,
    Field(ge=1, le=MAX_COUNT),
    Why("no run starts that many at once; leave the key out for no limit"),
]
Verify = Annotated[
    int,
    Field(ge=1, le=MAX_VERIFY),
    Why("the pool keeps that many attempts' endings in memory to judge each decrease"),
]


# --- retry and success ----------------------------------------------------------------


def _some(codes: list[int]) -> list[int]:
    if not codes:
        raise problem(
            "no_code",
            "lists no exit code: no attempt could succeed",
            "list the codes that mean success, such as [0, 3]",
        )
    return codes


def _saying(message: str, fix: str) -> Any:
    """A check that a mapping of optional keys gives at least one."""

    def check(spec: _Spec) -> _Spec:
        if not spec.model_fields_set:
            raise problem("empty", message, fix)
        return spec

    return model_validator(mode="after")(check)


class RetryOn(_Spec):
    """The failures a retry policy retries (at least one condition)."""

    model_config = ConfigDict(title="RetryOn", json_schema_extra={"minProperties": 1})

    exit: ExitCode | list[ExitCode] | None = key("Exit codes that are retried.")
    output: Text | list[Text] | None = key(
        "Retry when the output contains any of these texts (plain substrings, not regular "
        "expressions; for example '429' or 'Too Many Requests'). A pool's throttle.output "
        "takes regexes."
    )
    timeout: bool | None = key("Retry attempts that timed out.")
    connect: bool | None = key(
        "Retry attempts that could not reach their target or lost the connection (SSH: "
        "unreachable, refused, handshake dropped, connection lost)."
    )
    _said = _saying("lists no condition", "give exit, output, timeout or connect, or remove 'on'")


class RetrySpec(_Spec):
    """Retry policy. Keys given by a task override the same keys of defaults.retry."""

    attempts: Attempts | None = key(
        "Attempts in all, the first included (1 = no retry; at most "
        f"{MAX_ATTEMPTS}: {MAX_ATTEMPTS_WHY})."
    )
    backoff: Duration | None = duration(
        "Base delay: before attempt n+1 fleetrun waits a random time up to "
        "min(max_backoff, backoff * 2^(n-1))."
    )
    max_backoff: Duration | None = duration("Longest delay between two attempts.")
    on: RetryOn | None = key("Which failures are retried. Without 'on', every failure is retried.")


Retry = Attempts | RetrySpec
_RETRY = "Retry policy, or just the number of attempts."


class SuccessSpec(_Spec):
    """What counts as success for an attempt (default: exit 0)."""

    exit: (
        ExitCode
        | Annotated[
            list[ExitCode],
            AfterValidator(_some),
            WithJsonSchema(
                {
                    "type": "array",
                    "items": {"type": "integer", "minimum": 0, "maximum": MAX_EXIT},
                    "minItems": 1,
                }
            ),
        ]
        | None
    ) = key(
        "Every exit code that counts as success, for example [0, 3] for a status check "
        "whose 'stopped' is 3 (0 included only when listed). An accepted non-zero code is "
        "recorded as it is: 'exit 3 accepted'. Outputs ($FLEETRUN_OUTPUT) are published "
        "by an exit 0 only."
    )
    fail_on_output: Text | list[Text] | None = key(
        "An attempt whose output contains any of these texts fails, whatever its exit code "
        "(plain substrings, as retry.on.output, not regular expressions; for example "
        "'ERROR'). Such a failure is retried as retry says."
    )
    _said = _saying("says nothing", "give exit or fail_on_output, or remove 'success'")


_SUCCESS = (
    "What counts as success for an attempt (default: exit 0). The engine judges, the same "
    "for every runs_on. Keys given by a task override the same keys of defaults.success. "
    "Timeouts and signals are failures whatever this says."
)


# --- pools ----------------------------------------------------------------------------


def _in_range(maximum: float, help_: str, *, below: bool = False) -> Any:
    """A check of a number in (0, maximum] (or (0, maximum) when ``below``)."""

    bounds = f"it must be above 0 and {'below' if below else 'at most'} {maximum:g}"

    def check(value: object) -> object:
        if isinstance(value, str) and in_digits(value) is not None:
            # YAML reads 1e12 (no dot, no exponent sign) as text, not a number.
            raise problem(
                "number",
                f"{as_written(value)} is text to YAML, not a number",
                f"write it in digits ({in_digits(value)}): {help_}",
            )
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise problem("number", f"{as_written(value)} is not a number", f"write {help_}")
        if not 0 < value <= maximum or (below and value >= maximum):
            raise problem(
                "range", f"{as_written(value)} is out of range: {bounds}", f"write {help_}"
            )
        return float(value)

    return BeforeValidator(check)


def _range(maximum: float, *, below: bool = False) -> WithJsonSchema:
    bound = "exclusiveMaximum" if below else "maximum"
    return WithJsonSchema({"type": "number", "exclusiveMinimum": 0, bound: maximum})


Decrease = Annotated[
    float, _in_range(1.0, "a factor in (0, 1), such as 0.9", below=True), _range(1.0, below=True)
]
MaxDrop = Annotated[float, _in_range(1.0, "a factor in (0, 1], such as 0.5"), _range(1.0)]
Increase = Annotated[float, _in_range(1.0, "a fraction in (0, 1], such as 0.02"), _range(1.0)]
Probe = Annotated[
    float,
    _in_range(3600.0, "a plain number of seconds between two increases, such as 1"),
    _range(3600.0),
]
Floor = Annotated[
    float,
    _in_range(1.0, "a fraction of the configured values in (0, 1], such as 0.01"),
    _range(1.0),
]
Hold = Annotated[
    float,
    _in_range(3600.0, "a plain number of seconds at the plateau before probing past it, such as 5"),
    _range(3600.0),
]
Margin = Annotated[
    float, _in_range(0.5, "a fraction under the limit found in (0, 0.5], such as 0.01"), _range(0.5)
]


def _shared_name(text: str) -> str:
    if re.fullmatch(SHARED_NAME_PATTERN, text):
        return text
    # Say which rules fail, and echo a long name shortened.
    shown = (
        as_written(text)
        if len(text) <= 40
        else f"{as_written(text[:32])}... ({len(text)} characters)"
    )
    why, fix = [], []
    if not text:
        why.append("it is empty")
    elif not re.fullmatch(r"[A-Za-z0-9]", text[0]):
        why.append(f"its first character {as_written(text[0])} is not an ASCII letter or digit")
        fix.append("start it with an ASCII letter or digit")
    bad = next((c for c in text[1:] if not re.fullmatch(r"[A-Za-z0-9._-]", c)), None)
    if bad is not None:
        why.append(f"{as_written(bad)} is not an ASCII letter, digit, '.', '_' or '-'")
        fix.append("use only ASCII letters, digits, '.', '_' and '-'")
    if len(text) > SHARED_MAX:
        why.append(f"it is {len(text)} characters long, more than {SHARED_MAX}")
        fix.append(f"shorten it to at most {SHARED_MAX} characters")
    hint = (
        f"{'; '.join(fix)} (a name is {SHARED_RULE}), such as azure-subscription-1"
        if fix
        else SHARED_HELP
    )
    raise problem("shared", f"{shown} is not a valid shared pool name: {'; '.join(why)}", hint)


SharedName = Annotated[
    str,
    AfterValidator(_shared_name),
    WithJsonSchema({"type": "string", "pattern": SHARED_NAME_PATTERN}),
]
"""A shared pool's name: at most 64 ASCII letters, digits, '.', '_' and '-',
starting with an ASCII letter or digit; matched whole (``$`` alone would let a
trailing newline through)."""


class AdaptiveSpec(_Spec):
    """The adaptive algorithm's numbers (each optional)."""

    decrease: Decrease | None = key(
        "A throttle near the limit multiplies the rate by this (default 0.9); one soon after "
        "a fresh start halves it.",
    )
    max_drop: MaxDrop | None = key("One decrease keeps at least this fraction (default 0.2).")
    increase: Increase | None = key(
        "Step of probing past the plateau: 1, 3, 5 ... x this (default 0.02)."
    )
    probe: Probe | None = key("Seconds between two increases (default 1).")
    floor: Floor | None = key("Never below this fraction of the configured values (default 0.01).")
    verify: Verify | None = key(
        "Attempts watched after a decrease to check it helped; if the throttles did not "
        "follow the rate, it is undone (default 10)."
    )
    hold: Hold | None = key(
        "Seconds at the plateau before probing past it; doubles after each failed probe, "
        "up to 16x (default 5)."
    )
    margin: Margin | None = key("How far under a limit found the plateau sits (default 0.01).")
    initial: Count | None = key("The concurrency slow start begins at (default 8).")


class ThrottleSpec(_Spec):
    """What 'slow down' looks like. Only these signals change an adaptive pool's limits;
    a throttled attempt is retried whatever retry.on says. Default for an adaptive pool
    without one: exit 75, output '\\b429\\b' or 'too many requests', 'retry-after: (N)'."""

    exit: FailureExit | list[FailureExit] | None = key("Exit codes that mean throttled.")
    output: str | list[str] | None = key(
        "Regular expressions (Python re, searched line by line); an attempt whose output "
        "matches one was throttled."
    )
    retry_after: str | None = key(
        "A regular expression with exactly one capturing group, the delay: seconds or an "
        "HTTP-date (e.g. 'Retry-After: (\\d+)'): no attempt of the pool starts before it "
        "passed."
    )
    attempts: Attempts | None = key(
        "Attempts a throttled instance gets at least (default 5; the task's retry.attempts "
        "when larger)."
    )


class PoolSpec(_Spec):
    """A pool: concurrent slots and/or a start rate."""

    model_config = ConfigDict(
        json_schema_extra={"anyOf": [{"required": ["concurrency"]}, {"required": ["rate"]}]}
    )

    concurrency: Count | None = key("At most this many attempts at once.")
    rate: Rate | None = key(
        "At most this many starts per time unit: 10/s, 600/m, 100/h (a number is per second)."
    )
    burst: Count | None = key(
        "Starts allowed at once under the rate (token bucket size, default 1)."
    )
    adaptive: bool | AdaptiveSpec | None = key(
        "Follow what the provider grants: on throttle signals the effective rate and "
        "concurrency come down, while nothing is throttled they grow back slowly; the "
        "configured values are ceilings. true: the default numbers."
    )
    throttle: ThrottleSpec | None = key(
        "What 'slow down' looks like. Only these signals change an adaptive pool's limits; "
        "a throttled attempt is retried whatever retry.on says."
    )
    shared: SharedName | None = key(
        "Share this pool with every run of this user on this machine that names the same "
        "shared pool (at most 64 ASCII letters, digits, '.', '_' and '-', starting with an "
        "ASCII letter or digit), whatever its plan and state directory (they meet in "
        "$FLEETRUN_POOLS_DIR when set and not empty, else $XDG_STATE_HOME/fleetrun, else "
        "~/.local/state/fleetrun): one concurrency, rate, "
        "Retry-After pause and adaptive state between them (`fleetrun pools` shows it). "
        "The first run that opens it sets its limits until its last user leaves."
    )


# --- tasks ----------------------------------------------------------------------------


_NEED_FIX = (
    "write a task name, 'task[*]' for all its instances, or {task: name, at_least: N or 'P%'}"
)
_QUORUM_FIX = "write a count such as 2 or a percentage such as '67%'"
_NEED = re.compile(NEED_PATTERN)
_NAME = re.compile(NAME_PATTERN)


def _need_text(text: str) -> str:
    if not _NEED.fullmatch(text):
        raise problem("need", f"cannot read need {as_written(text)}", _NEED_FIX)
    return text


def _task_name(text: str) -> str:
    if not _NAME.fullmatch(text.strip()):
        raise problem("need", f"{as_written(text)} is not a task name", _NEED_FIX)
    return text.strip()


def _quorum(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool):
        if value < 1:
            raise problem("quorum", f"a quorum of {value} waits for nothing", _QUORUM_FIX)
        return value
    if isinstance(value, str) and value.strip().endswith("%"):
        try:
            pct = float(value.strip()[:-1])
        except ValueError:
            pct = -1.0
        if 0 < pct <= 100:
            return value
        raise problem(
            "quorum", f"{as_written(value)} is not a percentage in (0%, 100%]", _QUORUM_FIX
        )
    raise problem("quorum", f"{as_written(value)} is neither a count nor a percentage", _QUORUM_FIX)


NeedText = Annotated[
    str, AfterValidator(_need_text), WithJsonSchema({"type": "string", "pattern": NEED_PATTERN})
]
"""``X`` or ``X[*]``."""
Quorum = Annotated[
    int | str,
    BeforeValidator(_quorum),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": PERCENT_PATTERN},
            ]
        }
    ),
]
"""A count of at least 1, or a percentage in (0%, 100%]."""


class NeedSpec(_Spec):
    """A dependency on another task, optionally a quorum of its instances."""

    _missing = {"task": ("a need mapping needs 'task'", "write {task: name, at_least: N}")}

    task: Annotated[
        str, AfterValidator(_task_name), WithJsonSchema({"type": "string", "pattern": NAME_PATTERN})
    ] = Field(description="The task.")
    at_least: Quorum | None = key(
        "How many instances must succeed: a count (1 up to the instance count) or a "
        "percentage in (0%, 100%] rounded up."
    )


Need = Annotated[
    NeedText | NeedSpec,
    Expect("a task name or {task: name, at_least: N}", text=True),
    Field(
        description="A dependency. 'X': the same target's instance of X when both tasks fan "
        "out over targets, otherwise every instance of X. 'X[*]': every instance. "
        "{task: X, at_least: N or 'P%'}: a quorum of X's instances."
    ),
]


def _amount(value: object) -> object:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        shown = "a collection" if isinstance(value, dict | list) else repr(value)
        raise problem("amount", f"must be a number above zero, got {shown}", "write e.g. 1")
    return float(value)


Resources = dict[
    Annotated[
        str,
        _matching(RESOURCE_NAME_PATTERN, "resource", "a resource name", "use letters, digits, '_'"),
        WithJsonSchema({"type": "string", "pattern": RESOURCE_NAME_PATTERN}),
    ],
    Annotated[
        float, BeforeValidator(_amount), WithJsonSchema({"type": "number", "exclusiveMinimum": 0})
    ],
]
"""Resource name -> amount above zero (``{GPU: 1}``)."""

OPTION_TYPES: dict[str, Any] = {"boolean": bool, "resources": Resources}
"""The model's type of each ``runs_on.OptionType`` (a kind-owned task key's value)."""


def _runs_on(given: str) -> str:
    if given not in RUNS_ON:
        raise problem(
            "runs_on",
            f"unknown executor {given!r}{did_you_mean(given, RUNS_ON)}",
            "use one of: " + ", ".join(RUNS_ON),
        )
    return given


def _option(name: str) -> str:
    decl, owners = option_keys()[name]
    return f"(runs_on: {' or '.join(owners)}) {decl.description}"


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


_WHERE = "; ".join(f"'{k.name}', {k.where}" for k in KINDS.values())
_TASK_RULES: dict[str, Any] = {
    "oneOf": [{"required": ["run"]}, {"required": ["script"]}],
    "allOf": _option_rules(),
}


class TaskSpec(_Spec):
    """One task: a shell command, run once or once per target of a group."""

    model_config = ConfigDict(json_schema_extra=_TASK_RULES)
    _nullable = frozenset({"needs", "pools", "env"})

    run: Text | None = key(
        "Shell command. Templates: {{ target.name }}, {{ target.<attribute> }}, "
        "{{ vars.<name> }}, {{ tasks.<task>.outputs.<key> }}; inserted values are quoted "
        "for where they stand (bare word, inside \"...\" or '...') unless written "
        "{{ raw ... }}; a placeholder in a here-document, a comment, backticks or $((...)) "
        "is refused.",
    )
    description: str | None = key("What the task does.")
    phase: Text | None = key("The phase the task belongs to (one of 'phases' when given).")
    for_each: Text | None = key(
        "Fan out: one instance per target of this group ('all' = every target). Without it "
        "the task runs once."
    )
    needs: Annotated[list[Need] | NeedText, Expect("a list of needs, or one task name")] | None = (
        key("Tasks that must succeed first.", nullable=True)
    )
    pools: list[Text] | Text | None = key(
        "Pools whose limits every attempt of this task draws on.",
        nullable=True,
        json_schema_extra={
            "anyOf": [
                {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
                {"type": "string"},
                {"type": "null"},
            ]
        },
    )
    timeout: PositiveDuration | None = duration(
        "Per-attempt time limit (default: defaults.timeout, or none)."
    )
    retry: Retry | None = key(_RETRY)
    success: SuccessSpec | None = key(_SUCCESS)
    env: dict[EnvName, EnvValue] | None = key(
        "Environment variables for this task (over the plan's env).", nullable=True
    )
    cwd: Text | None = key("Working directory, relative to the plan file's directory.")
    estimate: Duration | None = duration(
        "Expected duration, for critical paths and makespan estimates (default 1s)."
    )
    runs_on: Annotated[str, AfterValidator(_runs_on)] | None = key(
        f"Where each attempt runs: {_WHERE}.", json_schema_extra={"enum": list(RUNS_ON)}
    )
    keep_running: bool | None = key(_option("keep_running"))
    resources: Resources | None = key(_option("resources"))
    script: Text | None = key(
        "Instead of 'run': a local script (path relative to the plan) and its arguments, "
        "templated and quoted like 'run'. With runs_on: ssh it is streamed to the remote "
        "shell (no copy, no file left behind).",
    )
    allow_empty: bool | None = key(
        "With for_each: the group may match no target (zero instances). Default false: "
        "apply refuses a task with no instances."
    )


class DefaultsSpec(_Spec):
    """The plan's defaults: values every task gets unless it sets its own."""

    timeout: PositiveDuration | None = duration("Per-attempt time limit.")
    retry: Retry | None = key(_RETRY)
    success: SuccessSpec | None = key(_SUCCESS)
    estimate: Duration | None = duration("Expected duration of a task.")


# --- targets, groups, ssh, the rest ---------------------------------------------------


_DEST = re.compile(
    r"^(?:(?P<user>[^@\s]+)@)?(?P<host>\[[^\]\s]+\]|[^:@\s\[\]]+)(?::(?P<port>\d+))?$"
)
_DEST_HELP = "write user@host:port (user and port optional), or a mapping with host, port, user"


def destination(text: str) -> dict[str, str | int] | None:
    """``[user@]host[:port]`` as ``{host, user, port}`` (the parts given); None when it
    cannot be read (a port out of 1 to 65535 included)."""
    m = _DEST.match(text.strip())
    port = int(m.group("port")) if m and m.group("port") else None
    if m is None or (port is not None and not 0 < port < 65536):
        return None
    host = m.group("host")
    out: dict[str, str | int] = {"host": host[1:-1] if host.startswith("[") else host}
    if m.group("user"):
        out["user"] = m.group("user")
    if port is not None:
        out["port"] = port
    return out


def _destination(text: str) -> str:
    if destination(text) is None:
        raise problem(
            "destination", f"cannot read the SSH destination {as_written(text.strip())}", _DEST_HELP
        )
    return text


def _port(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and value > 65535:
        raise problem(
            "port",
            f"port {value} is out of range: it must be 1 to 65535",
            "use a port from 1 to 65535",
        )
    return value


Destination = Annotated[str, AfterValidator(_destination)]
"""``[user@]host[:port]``."""
Port = Annotated[
    int,
    BeforeValidator(_port),
    Field(ge=1),
    WithJsonSchema({"type": "integer", "minimum": 1, "maximum": 65535}),
]


class SSHSpec(_Spec):
    """SSH settings (user, port, identity_file, known_hosts, jump, config_file,
    connect_timeout)."""

    host: Destination | None = key(
        "Host name or address (or a Host alias of ~/.ssh/config); user@host:port is "
        "accepted too. Default: the target's name."
    )
    port: Port | None = key("SSH port (default: ~/.ssh/config, else 22).")
    user: Text | None = key("Remote user (default: ~/.ssh/config).")
    identity_file: Text | None = key(
        "Private key file (relative to the plan); default: the agent and ~/.ssh/config. "
        "No passwords."
    )
    known_hosts: Text | None = key(
        "known_hosts file checked strictly (default: ~/.ssh/config's, else "
        "~/.ssh/known_hosts); 'accept-new' or 'accept-new:PATH' trusts a host with no key "
        "on record and appends its key. A changed key is always refused."
    )
    jump: Text | None = key("Jump host(s), user@host:port[,...] (like ProxyJump).")
    config_file: Text | None = key("OpenSSH client config to read instead of ~/.ssh/config.")
    connect_timeout: PositiveDuration | None = duration(
        "Bound on DNS, TCP, key exchange, authentication and opening a session (default 10s)."
    )


class TargetSpec(_Spec):
    """A target's attributes: scalars, and how to reach it over SSH."""

    model_config = ConfigDict(
        extra="allow",
        json_schema_extra={"propertyNames": {"pattern": NAME_PATTERN, "not": {"const": "name"}}},
    )
    __pydantic_extra__: dict[str, Scalar]

    ssh: Annotated[Destination | SSHSpec, Expect("user@host:port or a mapping")] | None = key(
        "How to reach the target over SSH (runs_on: ssh), over the plan's 'ssh' defaults: "
        "[user@]host[:port], or a mapping of SSH settings."
    )


class VarSpec(_Spec):
    """A variable with its origin or secrecy."""

    _nullable = frozenset({"value"})

    value: Annotated[Scalar, Expect("a string, number, boolean or null")] = Field(
        None, description="The value."
    )
    secret: bool | None = key("Mask the value everywhere (***).")
    env: str | None = key("Take the value from this variable of fleetrun's environment.")


class WhereGroup(_Spec):
    """Selection by attributes."""

    _missing = {
        "where": (
            "a group is a list of target names or {where: <expression>}",
            "add where: \"role != 'admin'\" or list the targets",
        )
    }

    where: Text = Field(
        description="Expression over target attributes: == != < <= > >= in [..] not in [..] "
        "and or not, parentheses, 'text', numbers, true, false, null; 'name' is the target "
        "name; a missing attribute is null."
    )


_DECIMAL = re.compile(r"\s*(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*")
"""A percentage's number: a plain decimal (no sign, exponent or fraction bar)."""


def percent(text: str) -> Fraction | None:
    """The percentage written ``text`` (``'25%'``) as an exact fraction of one, in [0, 1];
    else None."""
    text = text.strip()
    if not text.endswith("%") or not _DECIMAL.fullmatch(text[:-1]):
        return None
    pct = Fraction(text[:-1].strip())
    return pct / 100 if pct <= 100 else None


def _wave(value: object) -> object:
    if isinstance(value, list | dict):
        return value  # not one wave: refused as a type (the list's branch speaks)
    if isinstance(value, int) and not isinstance(value, bool) and value >= 1:
        return value
    if isinstance(value, str) and (not value.strip().endswith("%") or percent(value)):
        return value.strip()
    raise problem(
        "wave",
        f"{as_written(value)} is not a wave size",
        "write a group name, a count of at least 1 or a percentage in (0%, 100%]",
    )


def _max_failed(value: object) -> object:
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    if isinstance(value, str) and percent(value) is not None:
        return value
    raise problem(
        "max_failed",
        f"{as_written(value)} is neither a count nor a percentage",
        "write a count of failed targets (0, 2) or a percentage ('10%')",
    )


Wave = Annotated[
    int | str,
    BeforeValidator(_wave),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "integer", "minimum": 1},
                {"type": "string", "pattern": PERCENT_PATTERN},
                {"type": "string"},
            ]
        }
    ),
]
"""A wave's size: a group name, a count of at least 1 or a percentage in (0%, 100%]."""


class RolloutSpec(_Spec):
    """Rolling waves: a target's instances start only once its wave is open. A wave opens
    when the earlier waves have settled within max_failed (and, with pause, on promote).
    Tasks not fanned over targets are not held."""

    _missing = {"waves": ("the rollout has no 'waves'", "add waves: [canary, 8, '100%']")}

    waves: Annotated[list[Wave], Field(min_length=1)] | Wave = Field(
        description="Wave sizes in order, the last one repeating: a group name, a count, "
        "or a percentage of the fleet ('25%', truncated, at least 1)."
    )
    max_failed: (
        Annotated[
            int | str,
            BeforeValidator(_max_failed),
            WithJsonSchema(
                {
                    "anyOf": [
                        {"type": "integer", "minimum": 0},
                        {"type": "string", "pattern": PERCENT_PATTERN},
                    ]
                }
            ),
        ]
        | None
    ) = key(
        "Failed targets allowed per wave (a count or a percentage of the wave); strictly "
        "more halts the rollout. Default 0."
    )
    pause: bool | None = key("Wait for a promote before each next wave (default false).")


def _address(address: str) -> str:
    why = scheduler_address_problem(address)
    if why is not None:
        raise problem(
            "address",
            f"{as_written(address)} is not a scheduler address ({why})",
            "write tcp://HOST:PORT (or HOST:PORT), or remove it to use a local cluster",
        )
    return address


class ClusterSpec(_Spec):
    """Where runs_on: cluster jobs go (--cluster and FLEETRUN_CLUSTER override address).
    Without an address, a local cluster is started for the run."""

    address: Annotated[str, AfterValidator(_address)] | None = key(
        "A running Dask scheduler: tcp://HOST:PORT or HOST:PORT."
    )
    workers: Count | None = key("Worker processes of the local cluster (default 2).")


class PlanSpec(_Spec):
    """A fleetrun plan: a fleet of targets and the tasks to run across it."""

    model_config = ConfigDict(title="fleetrun plan")
    _nullable = frozenset({"env", "secrets", "secret_patterns", "phases", "cluster"})

    name: Text | None = key("Name of the plan (default: file name).")
    description: str | None = key("What the plan does.")
    env_file: Text | None = key(
        "File of KEY=VALUE lines (export prefix, comments and quotes allowed), relative to "
        "the plan; given to every task's environment."
    )
    env: dict[EnvName, EnvValue] | None = key(
        "Environment variables for every task (over env_file).", nullable=True
    )
    secrets: list[EnvName] | None = key(
        "Environment variable names whose values are redacted from logs, journal and "
        "terminal (also taken from fleetrun's own environment).",
        nullable=True,
        json_schema_extra={"uniqueItems": True},
    )
    secret_patterns: list[Text] | None = key(
        "Environment names containing one of these texts (or matching one of these globs, "
        "such as '*_PASSWORD') are secret too.",
        nullable=True,
        json_schema_extra={"default": list(DEFAULT_SECRET_NAME_PATTERNS)},
    )
    vars: dict[Name, Scalar | VarSpec] | None = key(
        "Values for templates: {{ vars.<name> }}. Each a scalar, or {value, secret, env}: "
        "'env' takes the value from fleetrun's environment, 'secret' masks it everywhere. "
        "--var NAME=VALUE / --var-file FILE override."
    )
    targets: dict[str, TargetSpec | None] | str | None = key(
        "The fleet: inline mapping of target name -> attributes (or null for none), or the "
        "path (relative to the plan) of a YAML file holding that mapping."
    )
    groups: dict[GroupName, list[Text] | WhereGroup] | None = key(
        "Named sets of targets (a list of target names, or {where: <expression>}); 'all' "
        "is reserved for every target."
    )
    pools: dict[Name, PoolSpec] | None = key(
        "Shared limits that tasks draw on (a task may use several)."
    )
    rollout: RolloutSpec | None = key(
        "Rolling waves: a target's instances start only once its wave is open."
    )
    defaults: DefaultsSpec | None = key("Values every task gets unless it sets its own.")
    phases: list[PhaseName] | None = key(
        "Phase order (for --mode phased and for checks: a task may not need a task of a "
        "later phase). Default: order of first use.",
        nullable=True,
        json_schema_extra={"uniqueItems": True},
    )
    tasks: dict[Name, TaskSpec] = Field(
        description="Task name -> task, in plan order.",
        json_schema_extra={"minProperties": 1},
    )
    ssh: Annotated[SSHSpec, Expect("a mapping of SSH settings")] | None = key(
        "SSH settings every target's own 'ssh' is laid over (user, port, identity_file, "
        "known_hosts, jump, config_file, connect_timeout)."
    )
    cluster: ClusterSpec | None = key(
        "Where runs_on: cluster jobs go (--cluster and FLEETRUN_CLUSTER override address). "
        "Without an address, a local cluster is started for the run.",
        nullable=True,
    )


def keys_of(model: type[BaseModel]) -> tuple[str, ...]:
    """The keys a section may have, in the order the model declares them."""
    return tuple(model.model_fields)


class _PlanSchema(GenerateJsonSchema):
    """Pydantic's JSON Schema, with a mapping's key rule as ``propertyNames`` (so that
    a key that breaks it is refused) rather than ``patternProperties``."""

    def dict_schema(self, schema: core_schema.DictSchema) -> JsonSchemaValue:
        out: JsonSchemaValue = {"type": "object"}
        keys = self.generate_inner(schema["keys_schema"]) if "keys_schema" in schema else {}
        keys = {k: v for k, v in keys.items() if k not in ("type", "title")}
        if keys:
            out["propertyNames"] = keys
        if "values_schema" in schema:
            values = self.generate_inner(schema["values_schema"])
            values.pop("title", None)
            out["additionalProperties"] = values
        self.update_with_validations(out, schema, self.ValidationsMapping.object)
        return out

    def field_title_should_be_set(self, schema: Any) -> bool:
        return False


def _defaults() -> dict[str, dict[str, Any]]:
    """What a key left out means, by section: read from the values the plan's model
    falls back on, so that the schema cannot say one thing and the loader do another."""
    import dataclasses

    from fleetrun.plan import _model

    def fields(cls: Any, *names: str) -> dict[str, Any]:
        given = {f.name: f.default for f in dataclasses.fields(cls)}
        return {n: given[n] for n in names}

    return {
        "AdaptiveSpec": fields(_model.AdaptiveSettings, *keys_of(AdaptiveSpec)),
        "ThrottleSpec": fields(_model.ThrottleRule, "attempts"),
        "PoolSpec": fields(_model.Pool, "burst"),
        "RolloutSpec": fields(_model.Rollout, "max_failed", "pause"),
        "RetrySpec": fields(_model.RetryPolicy, "attempts", "backoff", "max_backoff"),
        "RetryOn": {"timeout": False, "connect": False},
        "SuccessSpec": {"exit": [0]},
        "TaskSpec": {
            "estimate": 1.0,
            "runs_on": DEFAULT_KIND,
            "keep_running": False,
            "allow_empty": False,
        },
        "SSHSpec": {"connect_timeout": 10.0},
        "ClusterSpec": {"workers": 2},
        "VarSpec": {"secret": False},
    }


@functools.cache
def _schema() -> dict[str, Any]:
    schema = PlanSpec.model_json_schema(schema_generator=_PlanSchema)
    for section, given in _defaults().items():
        props = schema["$defs"][section]["properties"]
        for name, value in given.items():
            props[name].setdefault("default", value)
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": SCHEMA_ID,
        **schema,
    }


def plan_json_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of a plan file, generated from ``PlanSpec``;
    a fresh copy on every call."""
    return copy.deepcopy(_schema())
