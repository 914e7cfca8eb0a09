"""Render the Helm chart without helm: writes deploy/k8s/tradesim.yaml and deploy/compose/tradesim.toml.

helm is not installable where tradesim is developed (no Go toolchain, no helm in Debian, PyPI or npm), yet
the rendered manifests are committed and must never drift from the chart. This module implements exactly
the Go text/template subset the chart under deploy/helm/tradesim uses -- actions with `{{-`/`-}}` trimming,
comments, variables, field chains, pipelines with parentheses, `if`/`else if`/`else`, `range` (lists, and
maps in sorted key order like Go), `with`, `define`, and the functions `include`, `default`, `printf`,
`quote`, `toJson`, `toYaml`, `nindent`, `indent`, `sha256sum`, `required`, `not` -- and assembles the
documents the way `helm template` prints them (one `# Source:` per document, Helm's install order by kind).
Anything outside the subset is an error naming the file, never a silent difference.

    python deploy/render.py            # regenerate the committed files
    python deploy/render.py --check    # exit 1 if the committed files differ from a fresh render
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

DEPLOY = Path(__file__).resolve().parent
CHART = DEPLOY / "helm" / "tradesim"
MANIFESTS = DEPLOY / "k8s" / "tradesim.yaml"
COMPOSE_CONFIG = DEPLOY / "compose" / "tradesim.toml"
RELEASE = "tradesim"
NAMESPACE = "tradesim"

# helm's install order (pkg/releaseutil/kind_sorter.go), for the kinds this chart can produce; other kinds
# (custom resources such as ServiceMonitor) come last, as in helm.
INSTALL_ORDER = ["Namespace", "NetworkPolicy", "ResourceQuota", "LimitRange", "PodDisruptionBudget",
                 "ServiceAccount", "Secret", "ConfigMap", "PersistentVolumeClaim", "Role", "RoleBinding",
                 "Service", "Deployment", "StatefulSet", "Job", "CronJob", "Ingress"]


class TemplateError(Exception):
    """A template outside the supported subset, or one that fails when executed (e.g. `required`)."""


# --- lexing -----------------------------------------------------------------------------------------

@dataclass
class _Text:
    text: str


@dataclass
class _Action:
    body: str
    where: str


_TOKEN = re.compile(r"""
    (?P<ws>\s+)
  | (?P<string>"(?:[^"\\]|\\.)*")
  | (?P<raw>`[^`]*`)
  | (?P<number>-?\d+(?:\.\d+)?)
  | (?P<declare>:=)
  | (?P<punct>[()|,])
  | (?P<var>\$[A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*)
  | (?P<field>(?:\.[A-Za-z_][A-Za-z0-9_]*)+|\.)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
""", re.VERBOSE)


def _lex(source: str, name: str) -> list[_Text | _Action]:
    """Split a template into text and actions, applying the `{{-` and `-}}` whitespace trimming."""
    items: list[_Text | _Action] = []
    pos = 0
    trim_next = False
    while True:
        start = source.find("{{", pos)
        text = source[pos:] if start < 0 else source[pos:start]
        if trim_next:
            text = text.lstrip(" \t\r\n")
        if start < 0:
            items.append(_Text(text))
            return items
        end = _action_end(source, start, name)
        body = source[start + 2:end]
        if body.startswith("- ") or body.startswith("-\n") or body.startswith("-\t"):
            text = text.rstrip(" \t\r\n")
            body = body[1:]
        trim_next = body.endswith(" -") or body.endswith("\n-") or body.endswith("\t-")
        if trim_next:
            body = body[:-1]
        items.append(_Text(text))
        line = source.count("\n", 0, start) + 1
        body = body.strip()
        if not (body.startswith("/*") and body.endswith("*/")):
            items.append(_Action(body, f"{name}:{line}"))
        pos = end + 2


def _action_end(source: str, start: int, name: str) -> int:
    i = start + 2
    quote: str | None = None
    while i < len(source) - 1:
        c = source[i]
        if quote:
            if c == "\\" and quote == '"':
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"`":
            quote = c
        elif source.startswith("}}", i):
            return i
        i += 1
    raise TemplateError(f"{name}:{source.count(chr(10), 0, start) + 1}: unclosed action")


def _tokens(body: str, where: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(body):
        m = _TOKEN.match(body, pos)
        if m is None:
            raise TemplateError(f"{where}: cannot parse {body[pos:]!r}")
        kind = m.lastgroup or ""
        if kind != "ws":
            out.append((kind, m.group()))
        pos = m.end()
    return out


# --- parsing ----------------------------------------------------------------------------------------

@dataclass
class _Pipeline:
    declare: list[str]
    commands: list[list[Any]]  # each command: operands (tuples), the first may be a function name
    where: str


@dataclass
class _Node:
    kind: str  # text, print, if, range, with
    text: str = ""
    pipe: _Pipeline | None = None
    body: list[_Node] = field(default_factory=list)
    orelse: list[_Node] = field(default_factory=list)


def _parse_pipeline(tokens: list[tuple[str, str]], where: str) -> _Pipeline:
    declare: list[str] = []
    if any(kind == "declare" for kind, _ in tokens):
        split = next(i for i, (kind, _) in enumerate(tokens) if kind == "declare")
        names = [value for kind, value in tokens[:split] if kind != "punct"]
        if not names or len(names) > 2 or any(not n.startswith("$") or "." in n for n in names):
            raise TemplateError(f"{where}: bad variable declaration")
        declare = names
        tokens = tokens[split + 1:]
    commands, rest = _parse_commands(tokens, where)
    if rest:
        raise TemplateError(f"{where}: unexpected {rest[0][1]!r}")
    return _Pipeline(declare, commands, where)


def _parse_commands(tokens: list[tuple[str, str]], where: str) -> tuple[list[list[Any]], list[tuple[str, str]]]:
    commands: list[list[Any]] = [[]]
    while tokens:
        kind, value = tokens[0]
        if kind == "punct" and value == ")":
            break
        tokens = tokens[1:]
        if kind == "punct" and value == "|":
            commands.append([])
        elif kind == "punct" and value == "(":
            inner, tokens = _parse_commands(tokens, where)
            if not tokens or tokens[0] != ("punct", ")"):
                raise TemplateError(f"{where}: unclosed parenthesis")
            tokens = tokens[1:]
            commands[-1].append(("pipe", _Pipeline([], inner, where)))
        elif kind == "string":
            try:
                commands[-1].append(("lit", json.loads(value)))
            except json.JSONDecodeError as exc:
                raise TemplateError(f"{where}: bad string literal {value}: {exc.msg}") from None
        elif kind == "raw":
            commands[-1].append(("lit", value[1:-1]))
        elif kind == "number":
            commands[-1].append(("lit", float(value) if "." in value else int(value)))
        elif kind == "ident" and value in ("true", "false", "nil"):
            commands[-1].append(("lit", {"true": True, "false": False, "nil": None}[value]))
        elif kind in ("var", "field", "ident"):
            commands[-1].append((kind, value))
        else:
            raise TemplateError(f"{where}: unexpected {value!r}")
    if any(not c for c in commands):
        raise TemplateError(f"{where}: empty command in pipeline")
    return commands, tokens


def _parse(items: list[_Text | _Action], defines: dict[str, list[_Node]], name: str) -> list[_Node]:
    """Build the node tree; `define` blocks go to `defines` and leave nothing in place."""
    stream = iter(items)

    def block(closers: tuple[str, ...]) -> tuple[list[_Node], str, _Action | None]:
        nodes: list[_Node] = []
        for item in stream:
            if isinstance(item, _Text):
                if item.text:
                    nodes.append(_Node("text", text=item.text))
                continue
            toks = _tokens(item.body, item.where)
            head = toks[0][1] if toks and toks[0][0] == "ident" else ""
            if head in closers:
                return nodes, head, item
            if head in ("if", "range", "with"):
                first = node = _Node(head, pipe=_parse_pipeline(toks[1:], item.where))
                node.body, closer, at = block(("else", "end"))
                while closer == "else":
                    assert at is not None
                    rest = _tokens(at.body, at.where)[1:]
                    if rest[:1] == [("ident", "if")] and head == "if":
                        # `else if` nests a new `if` as the else branch and continues the chain there
                        inner = _Node("if", pipe=_parse_pipeline(rest[1:], at.where))
                        inner.body, closer, at = block(("else", "end"))
                        node.orelse = [inner]
                        node = inner
                        continue
                    if rest:
                        raise TemplateError(f"{at.where}: unsupported else clause")
                    node.orelse, closer, at = block(("end",))
                nodes.append(first)
            elif head == "define":
                if len(toks) != 2 or toks[1][0] != "string":
                    raise TemplateError(f"{item.where}: define needs one quoted name")
                body, _, _ = block(("end",))
                defines[json.loads(toks[1][1])] = body
            elif head in ("end", "else"):
                raise TemplateError(f"{item.where}: unexpected {head}")
            elif head in ("template", "block", "break", "continue"):
                raise TemplateError(f"{item.where}: {head} is outside the supported subset")
            else:
                nodes.append(_Node("print", pipe=_parse_pipeline(toks, item.where)))
        if closers:
            raise TemplateError(f"{name}: missing {{{{ end }}}}")
        return nodes, "", None

    tree, _, _ = block(())
    return tree


# --- execution --------------------------------------------------------------------------------------

def _truth(value: Any) -> bool:
    if value is None or value is False:
        return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return value != 0
    if isinstance(value, (str, list, dict, tuple)):
        return len(value) > 0
    return True


def _show(value: Any, where: str) -> str:
    """Go's default formatting for the values a chart prints: strings, numbers, booleans."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if value is None:
        raise TemplateError(f"{where}: prints a missing value")
    raise TemplateError(f"{where}: prints a {type(value).__name__}; use toYaml or toJson")


def _go_quote(text: str) -> str:
    out = []
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


def _to_json(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)
    for raw, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(raw, escaped)
    return text


def _to_yaml(value: Any) -> str:
    if value is None:
        return "null"
    dumped: str = yaml.safe_dump(value, default_flow_style=False, sort_keys=True, allow_unicode=True, width=10**9)
    return dumped.removesuffix("\n")


def _indent(width: int, text: str) -> str:
    pad = " " * width
    return pad + text.replace("\n", "\n" + pad)


def _printf(fmt: str, *args: Any) -> str:
    values = iter(args)

    def one(m: re.Match[str]) -> str:
        if m.group() == "%%":
            return "%"
        try:
            value = next(values)
        except StopIteration:
            raise TemplateError(f"printf {fmt!r}: too few arguments") from None
        return _show(value, f"printf {fmt!r}")

    return re.sub(r"%[sdv%]", one, fmt)


@dataclass
class _Scope:
    dot: Any
    root: Any
    vars: list[dict[str, Any]]

    def lookup(self, name: str, where: str) -> Any:
        if name == "$":
            return self.root
        for frame in reversed(self.vars):
            if name in frame:
                return frame[name]
        raise TemplateError(f"{where}: undefined variable {name}")


class _Engine:
    def __init__(self, defines: dict[str, list[_Node]]) -> None:
        self.defines = defines
        self.functions: dict[str, Callable[..., Any]] = {
            "include": self._include,
            "default": lambda default, *given: given[0] if given and _truth(given[0]) else default,
            "printf": _printf,
            "quote": lambda *values: " ".join(_go_quote(_show(v, "quote")) for v in values if v is not None),
            "toJson": _to_json,
            "toYaml": _to_yaml,
            "nindent": lambda width, text: "\n" + _indent(width, text),
            "indent": _indent,
            "sha256sum": lambda text: hashlib.sha256(text.encode()).hexdigest(),
            "required": self._required,
            "not": lambda value: not _truth(value),
        }

    @staticmethod
    def _required(message: str, value: Any) -> Any:
        if value is None or value == "":
            raise TemplateError(f"execution error: {message}")
        return value

    def _include(self, name: str, dot: Any) -> str:
        if name not in self.defines:
            raise TemplateError(f"include: no template named {name!r}")
        return self.execute(self.defines[name], _Scope(dot, dot, [{}]))

    def execute(self, nodes: list[_Node], scope: _Scope) -> str:
        out: list[str] = []
        for node in nodes:
            if node.kind == "text":
                out.append(node.text)
                continue
            assert node.pipe is not None
            value = self.pipeline(node.pipe, scope)
            names = node.pipe.declare
            if node.kind != "range" and len(names) > 1:
                raise TemplateError(f"{node.pipe.where}: two variables are declared only by range")
            if node.kind == "print":
                if names:  # `{{ $x := ... }}` declares until the end of the enclosing block
                    scope.vars[-1][names[0]] = value
                else:
                    out.append(_show(value, node.pipe.where))
            elif node.kind in ("if", "with"):
                frame = {names[0]: value} if names else {}
                inner = [*scope.vars, frame]
                if not _truth(value):
                    out.append(self.execute(node.orelse, _Scope(scope.dot, scope.root, inner)))
                elif node.kind == "with":
                    out.append(self.execute(node.body, _Scope(value, scope.root, inner)))
                else:
                    out.append(self.execute(node.body, _Scope(scope.dot, scope.root, inner)))
            elif node.kind == "range":
                out.append(self._range(node, value, scope))
        return "".join(out)

    def _range(self, node: _Node, value: Any, scope: _Scope) -> str:
        assert node.pipe is not None
        if value is None:
            pairs: list[tuple[Any, Any]] = []
        elif isinstance(value, dict):
            pairs = [(key, value[key]) for key in sorted(value)]
        elif isinstance(value, list):
            pairs = list(enumerate(value))
        else:
            raise TemplateError(f"{node.pipe.where}: range over a {type(value).__name__}")
        if not pairs:
            return self.execute(node.orelse, _Scope(scope.dot, scope.root, [*scope.vars, {}]))
        out = []
        names = node.pipe.declare
        for key, item in pairs:
            frame: dict[str, Any] = {}
            if len(names) == 1:
                frame[names[0]] = item
            elif len(names) == 2:
                frame[names[0]], frame[names[1]] = key, item
            out.append(self.execute(node.body, _Scope(item, scope.root, [*scope.vars, frame])))
        return "".join(out)

    def pipeline(self, pipe: _Pipeline, scope: _Scope) -> Any:
        result: Any = None
        for index, command in enumerate(pipe.commands):
            piped = [result] if index > 0 else []
            result = self._command(command, piped, scope, pipe.where)
        return result

    def _command(self, command: list[Any], piped: list[Any], scope: _Scope, where: str) -> Any:
        head_kind, head = command[0]
        if head_kind == "ident":
            if head not in self.functions:
                raise TemplateError(f"{where}: function {head!r} is outside the supported subset")
            args = [self._operand(op, scope, where) for op in command[1:]] + piped
            try:
                return self.functions[head](*args)
            except TypeError as exc:
                raise TemplateError(f"{where}: {head}: {exc}") from exc
        if len(command) > 1 or piped:
            raise TemplateError(f"{where}: {head} is not a function and takes no arguments")
        return self._operand(command[0], scope, where)

    def _operand(self, operand: tuple[str, Any], scope: _Scope, where: str) -> Any:
        kind, value = operand
        if kind == "lit":
            return value
        if kind == "pipe":
            return self.pipeline(value, scope)
        if kind == "field":
            return self._fields(scope.dot, value, where)
        if kind == "var":
            name, _, chain = value.partition(".")
            return self._fields(scope.lookup(name, where), "." + chain if chain else ".", where)
        raise TemplateError(f"{where}: {value!r} is a function; call it in its own command or parentheses")

    @staticmethod
    def _fields(base: Any, chain: str, where: str) -> Any:
        value = base
        for name in [part for part in chain.split(".") if part]:
            if not isinstance(value, dict):
                raise TemplateError(f"{where}: nil pointer evaluating {chain} (at .{name})")
            value = value.get(name)
        return value


def render_template(source: str, data: Any, name: str = "inline") -> str:
    """One template (with any `define`s it holds) executed on `data` as both `.` and `$`."""
    defines: dict[str, list[_Node]] = {}
    tree = _parse(_lex(source, name), defines, name)
    return _Engine(defines).execute(tree, _Scope(data, data, [{}]))


# --- the chart --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Document:
    """One rendered Kubernetes object: the template it came from, its text, and its parsed form."""

    source: str
    text: str
    obj: dict[str, Any]


def deep_merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Values layering as `helm -f`/`--set` do it: maps merge key by key, anything else replaces."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def load_values(chart: Path = CHART) -> dict[str, Any]:
    values = yaml.safe_load((chart / "values.yaml").read_text())
    if not isinstance(values, dict):
        raise TemplateError(f"{chart / 'values.yaml'}: not a mapping")
    return values


def render_chart(chart: Path = CHART, overrides: Mapping[str, Any] | None = None,
                 release: str = RELEASE, namespace: str = NAMESPACE) -> list[Document]:
    """Every object the chart renders for these values, in helm's install order."""
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    values = deep_merge(load_values(chart), overrides or {})
    root = {
        "Values": values,
        "Release": {"Name": release, "Namespace": namespace, "Service": "Helm", "IsInstall": True},
        "Chart": {"Name": meta["name"], "Version": meta["version"], "AppVersion": meta.get("appVersion", "")},
    }
    templates = sorted((chart / "templates").iterdir())
    defines: dict[str, list[_Node]] = {}
    trees: list[tuple[str, list[_Node]]] = []
    for path in templates:
        if path.suffix not in (".yaml", ".yml", ".tpl"):
            raise TemplateError(f"{path}: unexpected file in templates/")
        name = f"{meta['name']}/templates/{path.name}"
        tree = _parse(_lex(path.read_text(), name), defines, name)
        if not path.name.startswith("_"):
            trees.append((name, tree))
    engine = _Engine(defines)
    documents: list[Document] = []
    for name, tree in trees:
        text = engine.execute(tree, _Scope(root, root, [{}]))
        for chunk in re.split(r"(?:^|\s*\n)---\s*", text):
            chunk = chunk.strip()
            if not chunk:
                continue
            try:  # parsed as helm's release manifest holds it: the trimmed document and a newline
                obj = yaml.safe_load(chunk + "\n")
            except yaml.YAMLError as exc:
                raise TemplateError(f"{name}: renders invalid YAML: {exc}") from exc
            if not isinstance(obj, dict):
                raise TemplateError(f"{name}: renders a document that is not an object: {chunk[:80]!r}")
            documents.append(Document(name, chunk, obj))
    order = {kind: i for i, kind in enumerate(INSTALL_ORDER)}
    return sorted(documents, key=lambda d: order.get(str(d.obj.get("kind")), len(order)))


def manifest_text(documents: list[Document]) -> str:
    """The documents as `helm template` prints them."""
    return "".join(f"---\n# Source: {d.source}\n{d.text}\n" for d in documents)


def config_text(documents: list[Document]) -> str:
    """The tradesim configuration the chart's ConfigMap carries (docker compose mounts the same file)."""
    for document in documents:
        if document.obj.get("kind") == "ConfigMap" and "tradesim.toml" in document.obj.get("data", {}):
            text: str = document.obj["data"]["tradesim.toml"]
            return text
    raise TemplateError("the chart renders no ConfigMap with tradesim.toml")


def outputs() -> Iterator[tuple[Path, str]]:
    """The generated files and their fresh contents."""
    documents = render_chart()
    header = ("# Generated by `python deploy/render.py` from deploy/helm/tradesim (release "
              f"{RELEASE!r}, namespace {NAMESPACE!r}, default values). Do not edit: change the chart and re-render.\n")
    yield MANIFESTS, header + manifest_text(documents)
    yield COMPOSE_CONFIG, config_text(documents)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="only compare; exit 1 if a committed file differs")
    args = parser.parse_args(argv)
    try:
        fresh = list(outputs())
    except TemplateError as exc:
        print(f"render: {exc}", file=sys.stderr)
        return 2
    stale = [path for path, text in fresh if not path.is_file() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"render: {path.relative_to(DEPLOY.parent)} differs from a fresh render "
                  f"(run python deploy/render.py)", file=sys.stderr)
        return 1 if stale else 0
    for path, text in fresh:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(DEPLOY.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
