"""Plan files -> the validated, resolved ``Plan``.

``load_plan`` reads the plan file, its targets file, its ``env_file`` and its
tasks' scripts (and nothing else; each a regular file of at most
``MAX_FILE_BYTES``, see ``_readfile``), checks everything and raises one ``PlanError`` listing every
problem found, each with file:line:column, key path and fix. Nothing that a
file can contain makes it raise anything else: an unexpected failure is
reported as an internal-error diagnostic rather than a traceback.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import cast

from fleetrun.errors import Diagnostic, Location, PlanError
from fleetrun.plan._cluster import read_cluster
from fleetrun.plan._envfile import parse_env_file
from fleetrun.plan._expr import (
    ExprError,
    Where,
    attribute_values,
    compile_where,
    unknown_names,
)
from fleetrun.plan._fields import Ctx, did_you_mean, join
from fleetrun.plan._limits_read import check_shared, read_pool, read_rollout
from fleetrun.plan._model import ALL_TARGETS, ClusterSection, Plan, Pool, Scalar, Target
from fleetrun.plan._readfile import UnreadableFile, read_bounded
from fleetrun.plan._secrets import matches_secret_pattern, secret_names_and_values
from fleetrun.plan._spec import PhaseName, PlanSpec, Text, VarSpec, WhereGroup, keys_of
from fleetrun.plan._ssh import merge_ssh, read_ssh
from fleetrun.plan._tasks import read_defaults, read_tasks
from fleetrun.plan._validate import good_items, validate_entry, validate_fields, validate_key
from fleetrun.plan._written import as_written
from fleetrun.plan._yaml import YMap, YNode, YScalar, YSeq, load_yaml
from fleetrun.redact import DEFAULT_SECRET_NAME_PATTERNS

_log = logging.getLogger(__name__)

TOP_KEYS = keys_of(PlanSpec)
_VALUES = ("name", "description", "env_file", "env", "secrets", "secret_patterns", "phases")
"""The top-level keys holding plain values (validated by ``PlanSpec``'s fields)."""
NAME = re.compile(r"^[A-Za-z_][\w-]*$")
MAX_NAME_BYTES = 200
"""Longest target name, in UTF-8 bytes: log and output files are named after it,
and a file name takes at most 255 bytes (the attempt number and suffix need the rest)."""
NAME_HELP = "use letters, digits, '_' and '-', starting with a letter or '_'"


def load_plan(
    path: str | os.PathLike[str],
    *,
    var_overrides: Mapping[str, str] | None = None,
    require_tasks: bool = True,
) -> Plan:
    """Read, validate and resolve the plan file at ``path``; raise ``PlanError`` if invalid.

    ``var_overrides`` (``--var``/``--var-file``) replace the values of variables
    the plan declares under ``vars``; naming one it does not declare is an error.
    They count in the plan's ``source_hash``. ``require_tasks=False`` reads a
    fleet file for ``exec``: targets, groups and the rest, with no ``tasks``.
    """
    file = os.fspath(path)
    try:
        data = read_bounded(file)
    except UnreadableFile as e:
        raise PlanError(
            [
                Diagnostic(
                    Location(file, 1, 1),
                    f"cannot read the plan file: {e.reason}",
                    fix=e.fix or "check the path",
                )
            ]
        ) from None
    return _guarded(
        data, file, Path(file).resolve().parent, Path(file), var_overrides, require_tasks
    )


def load_plan_text(text: str, path: str = "<string>", base_dir: Path | None = None) -> Plan:
    """Validate and resolve a plan given as text.

    ``path`` names it in messages; relative files (targets, env_file, cwd) are
    looked up under ``base_dir``, by default the directory of ``path`` (or the
    current directory for ``<string>``).
    """
    if base_dir is None:
        base_dir = Path.cwd() if path == "<string>" else Path(path).resolve().parent
    return _guarded(
        text.encode("utf-8", "surrogatepass"),
        path,
        base_dir.resolve(),
        None if path == "<string>" else Path(path),
    )


def _guarded(
    data: bytes,
    file: str,
    base_dir: Path,
    path: Path | None,
    var_overrides: Mapping[str, str] | None = None,
    require_tasks: bool = True,
) -> Plan:
    # Building a large fleet allocates many small acyclic objects; the cyclic
    # collector would only rescan them over and over.
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        loader = _Loader(data, file, base_dir, path, var_overrides)
        loader.require_tasks = require_tasks
        return loader.load()
    except PlanError:
        raise
    except (RecursionError, MemoryError):
        raise PlanError(
            [Diagnostic(Location(file, 1, 1), "the plan is too large or too deeply nested")]
        ) from None
    except Exception as e:  # Invariant: bad input never shows a traceback.
        _log.debug("internal error while loading %s", file, exc_info=True)
        raise PlanError(
            [
                Diagnostic(
                    Location(file, 1, 1),
                    f"internal error while loading the plan: {type(e).__name__}: {e}",
                    fix="please report this together with the plan file",
                )
            ]
        ) from None
    finally:
        if was_enabled:
            gc.enable()


def _env_texts(node: YNode) -> dict[str, str]:
    """A validated ``env`` mapping's values as written (``yes`` stays yes, 010 stays 010)."""
    out: dict[str, str] = {}
    for name, (_, value) in node.entries.items() if isinstance(node, YMap) else ():
        if isinstance(value, YScalar):
            out[name] = value.value if isinstance(value.value, str) else value.source
    return out


class _Loader:
    def __init__(
        self,
        data: bytes,
        file: str,
        base_dir: Path,
        path: Path | None,
        var_overrides: Mapping[str, str] | None = None,
    ) -> None:
        self.data = data
        self.var_overrides = dict(var_overrides or {})
        self.secret_vars: set[str] = set()
        self.secret_defaults: set[str] = set()
        self.unset_vars: set[str] = set()
        """Variables declared as ``{secret, env}`` with no value (and none from ``env``):
        declared, so ``--var`` may set them, but a command may use them only once set."""
        self.file = file
        self.base_dir = base_dir
        self.path = path
        self.problems: list[Diagnostic] = []
        self.ctx = Ctx(file, self.problems)
        self.hash = hashlib.sha256(data)
        self.ssh: dict[str, Scalar] | None = None
        self.require_tasks = True

    def fail(self) -> PlanError:
        main = self.file
        return PlanError(
            sorted(
                self.problems,
                key=lambda d: (
                    (1, "", 0, 0)
                    if d.location is None
                    else (
                        d.location.file != main,
                        d.location.file,
                        d.location.line,
                        d.location.column,
                    )
                ),
            )
        )

    def load(self) -> Plan:
        try:
            text = self.data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise PlanError(
                [
                    Diagnostic(
                        Location(self.file, 1, 1),
                        f"not UTF-8 text: {e.reason}",
                        fix="save the plan as UTF-8",
                    )
                ]
            ) from None
        root = load_yaml(text, self.file, self.problems)
        if root is None or (isinstance(root, YScalar) and root.value is None):
            self.problems.append(
                Diagnostic(
                    Location(self.file, 1, 1),
                    "the plan is empty",
                    fix="write a mapping with at least 'tasks'",
                )
            )
            raise self.fail()
        top = self.ctx.mapping(root, "(plan)", allow_null=False)
        if top is None:
            raise self.fail()
        if len(top.entries) > 1 and not top.entries.keys() & set(TOP_KEYS):
            # Every key unknown: most likely a targets file given as the plan.
            self.problems.append(
                Diagnostic(
                    Location(self.file, top.line, top.column),
                    "no key of this file is a plan key: it looks like a targets file",
                    "(plan)",
                    "run a plan file, which names this one with 'targets: <path>'",
                )
            )
            raise self.fail()
        sections: dict[str, YNode] = dict(self.ctx.items(top, "", TOP_KEYS))
        return self.build(top, sections)

    def build(self, top: YMap, s: Mapping[str, YNode]) -> Plan:
        ctx = self.ctx
        # The plain values of the top level, each validated by its field of PlanSpec.
        value = {k: validate_key(ctx, PlanSpec, top, k, "") for k in _VALUES if k in s}
        name = value.get("name") or (self.path.stem if self.path else "plan")
        env: dict[str, str] = {}
        if "env_file" in s and value["env_file"] is not None:
            env.update(self.env_file(s["env_file"]))
        if value.get("env") is not None:
            env.update(_env_texts(s["env"]))
        secrets = set(value.get("secrets") or ())
        if secrets:
            ctx.listed_twice(s["secrets"], "secrets")
        patterns: tuple[str, ...] = DEFAULT_SECRET_NAME_PATTERNS
        if "secret_patterns" in s:
            patterns = tuple(dict.fromkeys(value["secret_patterns"] or ()))
            ctx.listed_twice(s["secret_patterns"], "secret_patterns")
        vars_ = self.vars(s["vars"]) if "vars" in s else {}
        self.override_vars(vars_)
        if "ssh" in s:
            self.ssh = read_ssh(ctx, top, "ssh", "", self.base_dir, target=False) or {}
        targets = self.targets(s["targets"]) if "targets" in s else {}
        groups = self.groups(top, s["groups"], targets) if "groups" in s else {}
        groups[ALL_TARGETS] = tuple(targets)
        pools = self.pools(s["pools"]) if "pools" in s else {}
        rollout = read_rollout(ctx, s["rollout"], groups) if "rollout" in s else None
        defaults = read_defaults(ctx, s["defaults"]) if "defaults" in s else None
        phases = None
        if "phases" in s:
            phases = value["phases"]
            if phases is None:  # the well-written ones, for the tasks' checks
                phases = [p for p, _ in good_items(PhaseName, s["phases"])]
            ctx.listed_twice(s["phases"], "phases")
            phases = list(dict.fromkeys(phases))
        cluster = read_cluster(ctx, s["cluster"]) if "cluster" in s else ClusterSection()
        tasks = {}
        if "tasks" not in s:
            if self.require_tasks:
                ctx.error(top, "tasks", "the plan has no 'tasks'", "add a 'tasks' mapping")
        else:
            tasks = read_tasks(
                ctx,
                s["tasks"],
                targets=targets,
                groups=groups,
                pools=pools,
                vars_=vars_,
                unset_vars=frozenset(self.unset_vars),
                phases=phases,
                defaults=defaults,
                base_dir=self.base_dir,
                read_file=self.read_side_file,
            )
        names, values = secret_names_and_values(
            secrets, patterns, [env, *(t.env for t in tasks.values())]
        )
        # Variables marked secret, or named like a secret, are masked like secret env values.
        for vname, vvalue in vars_.items():
            secret = vname in self.secret_vars or matches_secret_pattern(vname, patterns)
            if secret and vvalue is not None and str(vvalue):
                values.add(str(vvalue))
        values |= {v for v in self.secret_defaults if len(v) >= 3}
        if self.problems:
            raise self.fail()
        implicit: list[str] = []
        for t in tasks.values():
            if t.phase is not None and t.phase not in implicit:
                implicit.append(t.phase)
        return Plan(
            name=name,
            path=self.path,
            base_dir=self.base_dir,
            source_hash=self.hash.hexdigest(),
            env=env,
            secrets=frozenset(names),
            secret_values=frozenset(values),
            vars={k: v for k, v in vars_.items() if k not in self.unset_vars},
            targets=targets,
            groups=groups,
            pools=pools,
            phases=tuple(phases if phases is not None else implicit),
            tasks=tasks,
            rollout=rollout,
            ssh=self.ssh or {},
            cluster=cluster,
        )

    # --- sections -----------------------------------------------------------

    def read_side_file(self, node: YNode, key: str, what: str) -> tuple[str, str] | None:
        """(display name, text) of a file named relative to the plan, or None."""
        rel = self.ctx.string(node, key)
        if rel is None:
            return None
        full = self.base_dir / rel
        shown = rel if os.path.isabs(rel) else os.path.join(os.path.dirname(self.file), rel)
        if self.path is None:
            shown = str(full)
        try:
            data = read_bounded(full)
            text = data.decode("utf-8")
        except UnreadableFile as e:
            fix = e.fix or f"create it, or give its path relative to {self.base_dir}"
            self.ctx.error(node, key, f"cannot read {what} {str(full)!r}: {e.reason}", fix)
            return None
        except UnicodeDecodeError as e:
            self.ctx.error(
                node, key, f"cannot read {what} {str(full)!r}: {e.reason}", "save it as UTF-8"
            )
            return None
        self.hash.update(b"\0" + data)
        return shown, text

    def env_file(self, node: YNode) -> dict[str, str]:
        got = self.read_side_file(node, "env_file", "env_file")
        if got is None:
            return {}
        values, problems = parse_env_file(got[1], got[0])
        self.problems.extend(problems)
        return values

    def vars(self, node: YNode) -> dict[str, Scalar]:
        """``vars``: a scalar each, or ``{value, secret, env}`` (``env``: taken from
        fleetrun's environment; ``secret``: masked everywhere like a secret)."""
        out: dict[str, Scalar] = {}
        m = self.ctx.mapping(node, "vars")
        for name, (knode, value) in m.entries.items() if m else ():
            key = join("vars", name)
            if not NAME.match(name):
                self.ctx.error(
                    knode, key, f"{as_written(name)} is not a valid variable name", NAME_HELP
                )
            elif isinstance(value, YScalar):
                out[name] = self.ctx.scalar(value, key)
            elif isinstance(value, YMap):
                out[name] = self.var_spec(name, value, key)
            else:
                self.ctx.wrong_type(value, key, "a scalar, or a mapping {value, secret, env}")
        return out

    def var_spec(self, name: str, node: YMap, key: str) -> Scalar:
        """One ``{value, secret, env}`` variable, checked by ``VarSpec``. Without a value
        (no ``value``, or ``value: null``, and nothing from ``env``) it is still declared
        and recorded in ``unset_vars``: ``--var`` may give it one, and a command that uses
        it without one is an error."""
        ctx = self.ctx
        spec, bad = validate_fields(ctx, VarSpec, node, key)
        f = {k: v for k, (_, v) in node.entries.items()}
        value: Scalar = None
        if "value" in f and "value" not in bad:
            value = ctx.scalar(cast(YScalar, f["value"]), join(key, "value"))
        if spec.secret:
            self.secret_vars.add(name)
            if value is not None and str(value):
                # Masked even when --var replaces it: the plan's text holds it.
                self.secret_defaults.add(str(value))
        unset = value is None and "value" not in bad  # a bad value is reported already
        if spec.env is not None:
            found = os.environ.get(spec.env)
            if found is not None:
                value, unset = found, False
            elif "value" not in f and name not in self.var_overrides:
                unset = False  # reported here, at its 'env'
                ctx.error(
                    f["env"],
                    join(key, "env"),
                    f"variable {name!r} takes its value from ${spec.env}, which is not set",
                    f"export {spec.env}=..., or give it with --var {name}=...",
                )
        if unset:
            self.unset_vars.add(name)
        return value

    def override_vars(self, vars_: dict[str, Scalar]) -> None:
        """Apply ``--var``/``--var-file`` values to declared variables."""
        for name, value in self.var_overrides.items():
            if name not in vars_:
                known = ", ".join(sorted(vars_)) or "none"
                self.problems.append(
                    Diagnostic(
                        None,
                        f"the plan declares no variable {name!r}{did_you_mean(name, vars_)} "
                        f"(declared: {known})",
                        key=f"--var {name}",
                        fix=f"declare it under 'vars' in {self.file}, or fix the name",
                    )
                )
                continue
            vars_[name] = value
            self.unset_vars.discard(name)
            self.hash.update(b"\0var\0" + name.encode() + b"=" + value.encode())

    def targets(self, node: YNode) -> dict[str, Target]:
        ctx = self.ctx
        if isinstance(node, YScalar) and isinstance(node.value, str):
            got = self.read_side_file(node, "targets", "the targets file")
            if got is None:
                return {}
            ctx = Ctx(got[0], self.problems)
            loaded = load_yaml(got[1], got[0], self.problems)
            if loaded is None:
                return {}
            node = loaded
        if isinstance(node, YMap) or (isinstance(node, YScalar) and node.value is None):
            m = ctx.mapping(node, "targets")
        else:
            ctx.wrong_type(node, "targets", "a mapping of targets or the path of a targets file")
            m = None
        out: dict[str, Target] = {}
        for name, (knode, value) in m.entries.items() if m else ():
            key = join("targets", name)
            if not name.strip() or name != name.strip():
                ctx.error(
                    knode,
                    key,
                    f"target name {as_written(name)} is empty or has surrounding blanks",
                    "name the target with visible characters",
                )
                continue
            if len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES:
                ctx.error(
                    knode,
                    key,
                    f"target name of {len(name.encode('utf-8', 'surrogatepass'))} bytes is "
                    f"longer than the limit of {MAX_NAME_BYTES} bytes",
                    "use a shorter name (log and output files are named after it); "
                    "long descriptions fit in an attribute",
                )
                continue
            attrs: dict[str, Scalar] = {}
            ssh: dict[str, Scalar] | None = None
            am = ctx.mapping(value, key)
            for attr, (anode, aval) in am.entries.items() if am else ():
                akey = join(key, attr)
                if attr == "ssh":
                    ssh = read_ssh(ctx, cast(YMap, am), "ssh", key, self.base_dir, target=True)
                elif attr == "name" or not NAME.match(attr):
                    why = "is reserved" if attr == "name" else "is not a valid attribute name"
                    ctx.error(
                        anode,
                        akey,
                        f"attribute {as_written(attr)} {why}",
                        NAME_HELP + ", not 'name'",
                    )
                elif not isinstance(aval, YScalar):
                    ctx.wrong_type(aval, akey, "a string, number, boolean or null")
                else:
                    attrs[attr] = ctx.scalar(aval, akey)
            out[name] = Target(name, attrs, merge_ssh(self.ssh, ssh))
        return out

    def groups(
        self, top: YMap, node: YNode, targets: Mapping[str, Target]
    ) -> dict[str, tuple[str, ...]]:
        """``groups``: each a list of target names or ``{where: ...}``, checked by the
        plan's model; names, members and expressions checked against the targets."""
        ctx = self.ctx
        out: dict[str, tuple[str, ...]] = {}
        m = ctx.mapping(node, "groups")
        order = {n: i for i, n in enumerate(targets)}
        for name, (knode, value) in m.entries.items() if m else ():
            key = join("groups", name)
            if name == ALL_TARGETS:
                ctx.error(
                    knode,
                    key,
                    "the group name 'all' is reserved for every target",
                    "use another name; 'all' is always defined",
                )
                continue
            if not NAME.match(name):
                ctx.error(knode, key, f"{as_written(name)} is not a valid group name", NAME_HELP)
                continue
            spec = validate_entry(ctx, PlanSpec, top, "groups", name)
            if isinstance(spec, WhereGroup):
                out[name] = self.where_group(spec.where, cast(YMap, value), key, name, targets)
                continue
            members: list[str] = []
            ctx.listed_twice(value, key)
            items = value.items if isinstance(value, YSeq) else []
            good = {id(n) for _, n in good_items(Text, value)} if spec is None else None
            seen: set[str] = set()
            for i, item in enumerate(items):
                t = item.value if isinstance(item, YScalar) else None
                if (
                    not isinstance(t, str)
                    or t in seen
                    or (good is not None and id(item) not in good)
                ):
                    continue
                seen.add(t)
                if t in order:
                    members.append(t)
                else:
                    ctx.error(
                        item,
                        join(key, i),
                        f"unknown target {t!r}{did_you_mean(t, targets)}",
                        "name a target defined in 'targets'",
                    )
            out[name] = tuple(sorted(members, key=order.__getitem__))
        return out

    def where_group(
        self, text: str, m: YMap, key: str, name: str, targets: Mapping[str, Target]
    ) -> tuple[str, ...]:
        ctx = self.ctx
        wnode = m.entries["where"][1]
        wkey = join(key, "where")
        try:
            where = compile_where(text)
        except ExprError as e:
            ctx.problems.append(
                Diagnostic(
                    ctx.inner_loc(wnode, e.column - 1),
                    e.message,
                    wkey,
                    "fix the expression (see 'where' in the docs)",
                )
            )
            return ()
        if targets and self.unknown_words(where, wnode, wkey, targets):
            return ()
        members: list[str] = []
        for t in targets.values():
            try:
                if where.matches(t.name, t.attrs):
                    members.append(t.name)
            except ExprError as e:
                ctx.problems.append(
                    Diagnostic(
                        ctx.inner_loc(wnode, e.column - 1),
                        f"group {name!r}, target {t.name!r}: {e.message}",
                        wkey,
                        "compare values of the same type (numbers with numbers, text with text)",
                    )
                )
                break
        return tuple(members)

    def unknown_words(
        self, where: Where, wnode: YNode, wkey: str, targets: Mapping[str, Target]
    ) -> bool:
        """Report each word of ``where`` that is no attribute of any target (text
        without quotes, most likely); True when there was one."""
        errors = unknown_names(where, attribute_values(t.attrs for t in targets.values()))
        for e in errors:
            loc = self.ctx.inner_loc(wnode, e.column - 1)
            self.problems.append(Diagnostic(loc, e.message, wkey, e.fix))
        return bool(errors)

    def pools(self, node: YNode) -> dict[str, Pool]:
        ctx = self.ctx
        out: dict[str, Pool] = {}
        m = ctx.mapping(node, "pools")
        for name, (knode, value) in m.entries.items() if m else ():
            key = join("pools", name)
            if not NAME.match(name):
                ctx.error(knode, key, f"{as_written(name)} is not a valid pool name", NAME_HELP)
                continue
            pm = ctx.mapping(value, key)
            if pm is not None:
                out[name] = read_pool(ctx, name, knode, pm, key)
        if m is not None:
            check_shared(ctx, m, out)
        return out
