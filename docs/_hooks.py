"""mkdocs hooks: the reference pages generated from fleetrun itself.

Two pages are written at build time instead of by hand, so that they cannot
drift from the program:

- ``reference/plan-keys.md``: every key of a plan file, from the JSON Schema
  that ``fleetrun schema`` prints (``plan_json_schema()``). The renderer reads
  plain JSON Schema (draft 2020-12): ``properties``, ``required``,
  ``description``, ``default``, ``enum``/``const``, ``anyOf``/``oneOf``/``allOf``,
  ``items``, ``additionalProperties`` and ``$ref`` into ``$defs``, so it reads a
  schema written by hand and one made by pydantic's ``model_json_schema()``
  alike.
- ``reference/commands.md``: every command of the ``fleetrun`` click group,
  with its usage, help and options.

Each page is hand-written around a marker line (``<!-- fleetrun:plan-keys -->``,
``<!-- fleetrun:commands -->``) that the generated text replaces. The examples'
own READMEs (``examples/*/README.md``) become pages under ``examples/`` too, and
``<!-- fleetrun:include PATH -->`` shows a repository file in a fenced block.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
from mkdocs.config.defaults import MkDocsConfig
from mkdocs.structure.files import File, Files
from mkdocs.structure.pages import Page

ROOT = Path(__file__).resolve().parents[1]
PLAN_KEYS_MARKER = "<!-- fleetrun:plan-keys -->"
COMMANDS_MARKER = "<!-- fleetrun:commands -->"
INCLUDE = re.compile(r"^<!-- fleetrun:include (?P<path>\S+) -->$", re.M)

Schema = dict[str, Any]


# -- mkdocs events ---------------------------------------------------------------


def on_files(files: Files, config: MkDocsConfig) -> Files:
    """Add each example's README as a page ``examples/<name>.md``."""
    for readme in sorted(ROOT.glob("examples/*/README.md")):
        name = readme.parent.name
        text = readme.read_text(encoding="utf-8")
        note = (
            f"\n\n*This page is `examples/{name}/README.md` of the repository; "
            f"the files it names are in `examples/{name}/`.*\n"
        )
        files.append(File.generated(config, f"examples/{name}.md", content=text + note))
    return files


def on_page_markdown(markdown: str, page: Page, config: MkDocsConfig, files: Files) -> str:
    """Replace the markers of the reference pages with the generated text."""
    if PLAN_KEYS_MARKER in markdown:
        markdown = markdown.replace(PLAN_KEYS_MARKER, plan_keys_markdown())
    if COMMANDS_MARKER in markdown:
        markdown = markdown.replace(COMMANDS_MARKER, commands_markdown())
    return INCLUDE.sub(_include, markdown)


def _include(m: re.Match[str]) -> str:
    """A repository file as a fenced block (``<!-- fleetrun:include PATH -->``)."""
    path = ROOT / m["path"]
    text = path.read_text(encoding="utf-8").rstrip("\n")
    lang = {".yaml": "yaml", ".yml": "yaml", ".sh": "sh", ".py": "python"}.get(path.suffix, "")
    return f"`{m['path']}`:\n\n```{lang}\n{text}\n```"


# -- text helpers ----------------------------------------------------------------

_CODE_SPAN = re.compile(r"(`+)(.+?)\1", re.S)


def _escape(text: str) -> str:
    """Markdown-safe prose: ``*``, ``_``, ``<``, ``|`` and ``{{`` kept literal,
    code spans left as they are."""
    out: list[str] = []
    pos = 0
    for m in _CODE_SPAN.finditer(text):
        out.append(_escape_plain(text[pos : m.start()]))
        out.append(m.group(0))  # a "|" in a code span does not split a table cell
        pos = m.end()
    out.append(_escape_plain(text[pos:]))
    return "".join(out)


def _escape_plain(text: str) -> str:
    text = text.replace("\\", "\\\\").replace("&", "&amp;").replace("<", "&lt;")
    return re.sub(r"([*_|\[\]])", r"\\\1", text)


def _code(value: object) -> str:
    """A value as an inline code span (JSON for anything not text)."""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    fence = "``" if "`" in text else "`"
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def _one_line(text: str) -> str:
    return " ".join(text.split())


# -- the plan-key reference ------------------------------------------------------


class _SchemaPage:
    """Renders a JSON Schema as one section per object shape, each a table of
    its keys; nested objects get their own section, linked from the key."""

    def __init__(self, root: Schema) -> None:
        self.root = root
        self.defs: dict[str, Schema] = {**root.get("definitions", {}), **root.get("$defs", {})}
        self.sections: list[tuple[str, str, Schema]] = []  # (anchor, title, schema)
        self.anchor_of_def: dict[str, str] = {}
        self.anchors: set[str] = set()

    # Resolution ------------------------------------------------------------

    def resolve(self, node: Schema) -> tuple[Schema, str | None]:
        """``node`` with its ``$ref`` followed (sibling keys win), and the name
        of the definition it came from."""
        name = None
        seen = 0
        while "$ref" in node and seen < 32:
            ref = str(node["$ref"])
            name = ref.rsplit("/", 1)[-1]
            target = self.defs.get(name)
            if target is None:
                raise ValueError(f"the schema's $ref {ref!r} names no definition")
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            seen += 1
        if "allOf" in node:
            merged: Schema = {k: v for k, v in node.items() if k != "allOf"}
            for part in node["allOf"]:
                part, _ = self.resolve(part)
                if "if" in part or "then" in part:
                    continue  # conditional rules are explained in the guides
                for key, value in part.items():
                    if key == "properties":
                        merged["properties"] = {
                            **part["properties"],
                            **merged.get("properties", {}),
                        }
                    elif key == "required":
                        merged["required"] = sorted(
                            {*merged.get("required", []), *part["required"]}
                        )
                    else:
                        merged.setdefault(key, value)
            node = merged
        return node, name

    @staticmethod
    def _alternatives(node: Schema) -> list[Schema] | None:
        for key in ("anyOf", "oneOf"):
            if key in node:
                return list(node[key])
        return None

    @staticmethod
    def is_object(node: Schema) -> bool:
        return "properties" in node

    # Sections --------------------------------------------------------------

    def _new_anchor(self, title: str) -> str:
        base = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "plan"
        anchor, n = base, 2
        while anchor in self.anchors:
            anchor, n = f"{base}-{n}", n + 1
        self.anchors.add(anchor)
        return anchor

    def section(self, node: Schema, path: str, def_name: str | None) -> str:
        """The anchor of the section documenting the object ``node`` (made once
        per definition, once per path for an inline object)."""
        if def_name is not None and def_name in self.anchor_of_def:
            return self.anchor_of_def[def_name]
        anchor = self._new_anchor(f"key-{path}")
        if def_name is not None:
            self.anchor_of_def[def_name] = anchor
        self.sections.append((anchor, path, node))
        return anchor

    # Types -----------------------------------------------------------------

    def type_text(self, node: Schema, path: str) -> str:
        """What a key takes, in words, with links to the sections of objects."""
        node, def_name = self.resolve(node)
        if self.is_object(node):
            # anyOf/oneOf beside properties only constrain which keys are required.
            anchor = self.section(node, path, def_name)
            return f"[{_escape(def_name or path)}](#{anchor})"
        alternatives = self._alternatives(node)
        if alternatives is not None:
            parts: list[str] = []
            nullable = False
            for alt in alternatives:
                resolved, _ = self.resolve(alt)
                if resolved.get("type") == "null":
                    nullable = True
                    continue
                text = self.type_text(alt, path)
                if text not in parts:
                    parts.append(text)
            text = " or ".join(parts) if parts else "null"
            return f"{text} (or null)" if nullable and parts else text
        if "const" in node:
            return _code(node["const"])
        if "enum" in node:
            return "one of " + ", ".join(_code(v) for v in node["enum"])
        kind = node.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            return " or ".join(self.type_text({**node, "type": k}, path) for k in kinds)
        if kind == "object" or "additionalProperties" in node:
            extra = node.get("additionalProperties")
            if isinstance(extra, dict) and extra:
                inner = self.type_text(extra, f"{path}.<name>")
                return f"mapping of name → {inner}"
            return "mapping"
        if kind == "array":
            items = node.get("items")
            inner = self.type_text(items, path) if isinstance(items, dict) else "values"
            return f"list of {inner}"
        return self._scalar(node, kind)

    @staticmethod
    def _scalar(node: Schema, kind: object) -> str:
        words = {"string": "text", "integer": "integer", "number": "number",
                 "boolean": "boolean", "null": "null"}  # fmt: skip
        text = words.get(str(kind), "any value")
        low, high = node.get("minimum"), node.get("maximum")
        if node.get("exclusiveMinimum") is not None:
            text += f" > {node['exclusiveMinimum']}"
        elif low is not None and high is not None:
            text += f" {low} to {high}"
        elif low is not None:
            text += f" ≥ {low}"
        elif high is not None:
            text += f" ≤ {high}"
        if node.get("exclusiveMaximum") is not None:
            text += f" < {node['exclusiveMaximum']}"
        return text

    # Rendering -------------------------------------------------------------

    def table(self, node: Schema, path: str) -> list[str]:
        required = set(node.get("required", []))
        rows = ["| key | takes | default | meaning |", "|---|---|---|---|"]
        for key, prop in node.get("properties", {}).items():
            child = f"{key}" if path == "plan" else f"{path}.{key}"
            resolved, _ = self.resolve(prop)
            takes = self.type_text(prop, child)
            if "default" in prop or "default" in resolved:
                default = _code(prop.get("default", resolved.get("default")))
            else:
                default = "required" if key in required else ""
            meaning = prop.get("description") or resolved.get("description") or ""
            rows.append(f"| `{key}` | {takes} | {default} | {_escape(_one_line(meaning))} |")
        return rows

    def render(self) -> str:
        root, _ = self.resolve(self.root)
        self.section(root, "plan", None)
        lines: list[str] = []
        done = 0
        # Sections are discovered while tables are rendered: render until none is new.
        while done < len(self.sections):
            anchor, title, node = self.sections[done]
            done += 1
            heading = "The plan file (top level)" if title == "plan" else f"`{title}`"
            lines += [f"## {heading} {{#{anchor}}}", ""]
            description = node.get("description")
            if description:
                lines += [_escape(_one_line(description)), ""]
            if node.get("additionalProperties") is False:
                lines += ["Any other key is a plan error.", ""]
            lines += [*self.table(node, title), ""]
        return "\n".join(lines)


def plan_schema() -> Schema:
    """The schema ``fleetrun schema`` prints."""
    from fleetrun.plan import plan_json_schema

    return dict(plan_json_schema())


def plan_keys_markdown(schema: Schema | None = None) -> str:
    """The plan-key reference: one table per object of the plan file."""
    return _SchemaPage(plan_schema() if schema is None else schema).render()


# -- the command reference -------------------------------------------------------


def _walk(
    command: click.Command, ctx: click.Context
) -> Iterator[tuple[click.Command, click.Context]]:
    yield command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from _walk(sub, click.Context(sub, info_name=name, parent=ctx))


def _help_markdown(text: str) -> list[str]:
    """Click help text as Markdown: paragraphs unwrapped; a ``\\b`` paragraph
    keeps its lines (commands in a code block, other lines as a list)."""
    out: list[str] = []
    for para in re.split(r"\n\s*\n", inspect.cleandoc(text)):
        lines = [line for line in para.splitlines() if line.strip()]
        if lines and lines[0].strip() == "\b":
            lines = lines[1:]
            if not lines:
                continue
            if all(line.strip().startswith("fleetrun ") for line in lines):
                out += ["```text", *(line.strip() for line in lines), "```", ""]
                continue
        if lines:
            out += [_escape(_one_line(" ".join(lines))), ""]
    return out


def commands_markdown() -> str:
    """The command reference: each command's usage, help and options, in the
    order ``fleetrun --help`` lists them, subcommands under their group."""
    from fleetrun.cli import cli

    root = click.Context(cli, info_name="fleetrun")
    lines: list[str] = []
    for command, ctx in _walk(cli, root):
        path = ctx.command_path
        anchor = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
        level = "##" if ctx.parent is None or ctx.parent.parent is None else "###"
        lines += [f"{level} `{path}` {{#{anchor}}}", ""]
        lines += ["```text", command.get_usage(ctx), "```", ""]
        lines += _help_markdown(command.help or "")
        rows = []
        for param in command.get_params(ctx):
            if getattr(param, "hidden", False):
                continue
            record = param.get_help_record(ctx)
            if record is None:
                if isinstance(param, click.Argument):
                    name = param.make_metavar(ctx)
                    rows.append(f"| `{name}` | argument{'' if param.required else ', optional'} |")
                continue
            opts, help_text = record
            rows.append(f"| `{opts}` | {_escape(_one_line(help_text))} |")
        if rows:
            lines += ["| argument or option | meaning |", "|---|---|", *rows, ""]
        if isinstance(command, click.Group):
            names = [n for n in command.list_commands(ctx) if n]
            links = ", ".join(
                f"[`{n}`](#{anchor}-{re.sub(r'[^a-z0-9]+', '-', n.lower())})" for n in names
            )
            lines += [f"Commands: {links}.", ""]
    return "\n".join(lines)
