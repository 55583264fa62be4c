"""The executor kinds a task's ``runs_on`` may name, and the typed options each kind reads.

Each kind declares a frozen options class. Its fields declared with ``option()``
are the task keys the kind owns (``keep_running`` for ``local``, ``resources``
for ``cluster``), each with its value type and a description. The plan loader
reads those keys through the class of the task's kind (a bad value, or a key
that kind does not read, is reported at its file, line and column), the JSON
Schema's ``runs_on`` and option keys are generated from the same classes, and
the kind's executor finds the object as ``Attempt.options`` and reads its
attributes.

This module is light on purpose: the plan loader imports it, so it imports only
the standard library (no Linux-only process code, no asyncssh, no Dask). The
executors import it too; plans and executors never import each other.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal, Self

OptionType = Literal["boolean", "resources"]
"""How a plan writes an option's value: ``boolean`` (true or false, default false);
``resources`` (resource name -> amount above zero, default empty)."""

_DEFAULTS: Mapping[OptionType, Mapping[str, Any]] = {
    "boolean": {"default": False},
    "resources": {"default_factory": dict},
}


def option(kind: OptionType, description: str) -> Any:
    """Declare a field of an options class as a task key the kind owns.

    The field's name is the key; ``description`` goes into the JSON Schema; the
    default is the type's (false, an empty mapping).
    """
    meta = {"option": (kind, description)}
    return field(**_DEFAULTS[kind], metadata=meta)


@dataclass(frozen=True, slots=True)
class OptionKey:
    """One task key a kind owns: its name, how its value is written, what it does."""

    name: str
    type: OptionType
    description: str


@dataclass(frozen=True, slots=True)
class Script:
    """A ``script:`` task's local file: its absolute path and its text (read at load)."""

    path: str
    text: str


@dataclass(frozen=True, slots=True)
class ExecutorOptions:
    """What every kind's options carry; each kind's class adds its own keys.

    ``script``: a ``script:`` task's file and text (None for a ``run:`` task).
    The command already runs it as ``sh PATH ARGS``; a kind that runs elsewhere
    (``ssh``) streams the text instead, so nothing is copied there.
    """

    script: Script | None = None

    @classmethod
    def owned_keys(cls) -> tuple[OptionKey, ...]:
        """The task keys this kind owns, in declaration order."""
        return tuple(
            OptionKey(f.name, *f.metadata["option"])
            for f in dataclasses.fields(cls)
            if "option" in f.metadata
        )

    @classmethod
    def of(cls, options: ExecutorOptions | None) -> Self:
        """``options`` as this kind's class: None (an attempt built without options)
        gives the defaults; another kind's options are a programming error."""
        if options is None:
            return cls()
        if not isinstance(options, cls):
            raise TypeError(f"{cls.__name__} expected, got {type(options).__name__}")
        return options


@dataclass(frozen=True, slots=True)
class LocalOptions(ExecutorOptions):
    """``runs_on: local``: a child process of fleetrun."""

    keep_running: bool = option(
        "boolean",
        "Leave processes the command starts running after it ends "
        "(default false: they are ended with the attempt).",
    )


@dataclass(frozen=True, slots=True)
class SSHOptions(ExecutorOptions):
    """``runs_on: ssh``: a command on the task's target over SSH.

    It owns no task keys: how a target is reached is the target's ``ssh``
    attribute (the keys of ``SSH_KEYS``), read per target. A ``script:`` task's
    text is streamed to the remote shell.
    """


@dataclass(frozen=True, slots=True)
class ClusterOptions(ExecutorOptions):
    """``runs_on: cluster``: one job on the compute cluster."""

    resources: Mapping[str, float] = option(
        "resources",
        "What each job asks for besides MACHINE: 1 (resource name -> amount), e.g. {GPU: 1}.",
    )


SSH_KEYS = (
    "host",
    "port",
    "user",
    "identity_file",
    "known_hosts",
    "jump",
    "config_file",
    "connect_timeout",
)
"""The keys of an ``ssh`` mapping (a target's attribute, or the plan's ``ssh:``
defaults): the plan loader checks them, the SSH executor reads them."""


@dataclass(frozen=True, slots=True)
class Kind:
    """One executor kind ``runs_on`` may name.

    ``options``: its options class; ``where``: where its attempts run, in a few
    words (the schema's description of ``runs_on``); ``per_target``: it runs on
    each target, so a task of this kind needs ``for_each``.
    """

    name: str
    options: type[ExecutorOptions]
    where: str
    per_target: bool = False


DEFAULT_KIND = "local"
"""The kind of a task that gives no ``runs_on``."""

KINDS: Mapping[str, Kind] = MappingProxyType(
    {
        k.name: k
        for k in (
            Kind("local", LocalOptions, "a child process here (the default)"),
            Kind(
                "ssh",
                SSHOptions,
                "on the task's target over SSH (see the target's 'ssh'; needs for_each)",
                per_target=True,
            ),
            Kind(
                "cluster", ClusterOptions, "a job on the compute cluster (one per worker machine)"
            ),
        )
    }
)
"""Every kind, in the order messages and the schema list them."""

RUNS_ON = tuple(KINDS)
"""The names ``runs_on`` may give."""


def option_keys() -> dict[str, tuple[OptionKey, tuple[str, ...]]]:
    """Every kind-owned task key, in kind order: its declaration and the kinds that read it."""
    out: dict[str, tuple[OptionKey, tuple[str, ...]]] = {}
    for kind in KINDS.values():
        for key in kind.options.owned_keys():
            got = out.get(key.name)
            out[key.name] = (key, (*got[1], kind.name) if got else (kind.name,))
    return out


def options_for(kind: str, values: Mapping[str, Any], script: Script | None) -> ExecutorOptions:
    """The options of a task of ``kind`` that gave ``values`` (checked values of the
    kind's keys) and, for a ``script:`` task, its script."""
    return KINDS[kind].options(script=script, **values)


_ADDRESS = re.compile(r"^(?:(?P<scheme>[a-z][a-z0-9+.-]*)://)?(?P<rest>.*)$", re.DOTALL)
_SCHEMES = ("tcp", "tls", "ws", "wss", "inproc", "ucx")


def scheduler_address_problem(address: str) -> str | None:
    """What is wrong with a compute cluster's scheduler address (``HOST:PORT`` or
    ``SCHEME://HOST:PORT``, an IPv6 host in brackets), in words; None when nothing is.
    The plan's ``cluster.address`` and ``--cluster`` follow this one rule."""
    if not address or any(c.isspace() for c in address):
        return "it holds white space" if address else "it is empty"
    found = _ADDRESS.match(address)
    assert found is not None  # the pattern matches every string
    scheme, rest = found["scheme"], found["rest"]
    if scheme is not None and scheme not in _SCHEMES:
        return f"unknown scheme {scheme}://"
    if scheme == "inproc":
        return None
    host, sep, port = rest.rpartition(":")
    if not sep or not host:
        return "no host and port"
    if host.startswith("[") != host.endswith("]"):
        return "an unclosed [ in the host"
    if ":" in host and not host.startswith("["):
        return "an IPv6 host goes in brackets, e.g. [::1]:8786"
    if not port.isdigit() or not 0 < int(port) < 65536:
        return f"port {port!r} is not a number from 1 to 65535"
    return None
