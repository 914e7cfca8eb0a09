"""deploy/render.py's template subset behaves as Go text/template and Helm's functions do.

Each expected output is what `helm template` produces for the same template (Go semantics: `{{-`/`-}}` trim
all adjacent whitespace, maps range in sorted key order, `else if` chains, `$` is the root inside
`range`); anything outside the subset must fail loudly rather than render something helm would not.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.deploy.support import load_render

render = load_render()


def run(source: str, data: Any = None) -> str:
    return str(render.render_template(source, data if data is not None else {}))


def test_trim_markers_remove_all_adjacent_whitespace() -> None:
    assert run("a \n\t {{- 1 -}} \n b") == "a1b"
    assert run("a {{ 1 }} b") == "a 1 b"
    assert run("a\n{{- /* a comment */ -}}\nb") == "ab"
    assert run("x{{/* comment */}}y") == "xy"


def test_range_over_a_map_is_in_key_order_and_binds_key_value_and_dot() -> None:
    data = {"m": {"b": 2, "a": 1, "c": 3}, "p": "!"}
    assert run("{{ range $k, $v := .m }}{{ $k }}={{ $v }}{{ $.p }};{{ end }}", data) == "a=1!;b=2!;c=3!;"
    assert run("{{ range .m }}{{ . }}{{ end }}", data) == "123"


def test_range_over_a_list_and_its_else_branch() -> None:
    assert run("{{ range $i, $x := .l }}{{ $i }}:{{ $x }} {{ end }}", {"l": ["a", "b"]}) == "0:a 1:b "
    assert run("{{ range .l }}x{{ else }}empty{{ end }}", {"l": []}) == "empty"
    assert run("{{ range .missing }}x{{ else }}none{{ end }}", {}) == "none"


def test_if_else_if_else_and_truthiness() -> None:
    source = "{{ if .a }}A{{ else if .b }}B{{ else }}C{{ end }}"
    assert run(source, {"a": 1, "b": 1}) == "A"
    assert run(source, {"a": 0, "b": "x"}) == "B"
    assert run(source, {"a": "", "b": []}) == "C"
    assert run("{{ if not .a }}off{{ end }}", {"a": False}) == "off"


def test_with_rebinds_dot_and_variables_scope_to_their_block() -> None:
    assert run("{{ with .a }}{{ .b }}{{ else }}none{{ end }}", {"a": {"b": "in"}}) == "in"
    assert run("{{ with .a }}{{ .b }}{{ else }}none{{ end }}", {"a": {}}) == "none"
    assert run("{{ $x := .v }}{{ if true }}{{ $y := 2 }}{{ $x }}{{ $y }}{{ end }}", {"v": 1}) == "12"
    with pytest.raises(render.TemplateError, match=r"undefined variable \$y"):
        run("{{ if true }}{{ $y := 2 }}{{ end }}{{ $y }}")


def test_define_include_and_indentation() -> None:
    source = ('{{- define "labels" -}}\na: {{ .a }}\nb: {{ .b | quote }}\n{{- end -}}\n'
              'metadata:\n  labels:\n    {{- include "labels" .v | nindent 4 }}\n')
    assert run(source, {"v": {"a": "x", "b": 1}}) == 'metadata:\n  labels:\n    a: x\n    b: "1"\n'
    assert run('{{ "a\\nb" | indent 2 }}') == "  a\n  b"


def test_helm_functions() -> None:
    assert run('{{ .x | default "d" }}|{{ .y | default "d" }}', {"x": "", "y": "v"}) == "d|v"
    assert run('{{ printf "%s-%d-%v%%" "a" 3 true }}') == "a-3-true%"
    assert run('{{ .s | quote }}', {"s": 'say "hi"\n'}) == '"say \\"hi\\"\\n"'
    assert run("{{ toJson .v }}", {"v": {"b": ["x", 1], "a": "<&>"}}) == '{"a":"\\u003c\\u0026\\u003e","b":["x",1]}'
    assert run("{{ toYaml .v }}", {"v": {"requests": {"memory": "1Gi", "cpu": "100m"}}}) == \
        "requests:\n  cpu: 100m\n  memory: 1Gi"
    assert run('{{ "abc" | sha256sum }}') == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    assert run("{{ (printf \"%s\" .a) | quote }}", {"a": "p"}) == '"p"'
    assert run("{{ 9102.0 }}|{{ 1.5 }}|{{ true }}") == "9102|1.5|true"


def test_required_fails_with_its_message() -> None:
    with pytest.raises(render.TemplateError, match=r"nats\.url is required"):
        run('{{ required "nats.url is required" .nats.url }}', {"nats": {"url": ""}})
    assert run('{{ required "x" .a }}', {"a": "ok"}) == "ok"


@pytest.mark.parametrize(("source", "message"), [
    ("{{ .a }}", "prints a missing value"),
    ("{{ .a.b }}", "nil pointer evaluating"),
    ("{{ .m }}", "prints a dict"),
    ("{{ upper .s }}", "outside the supported subset"),
    ("{{ if .a }}x", "missing"),
    ("{{ end }}", "unexpected end"),
    ('{{ template "x" . }}', "outside the supported subset"),
    ('{{ include "nope" . }}', "no template named"),
    ("{{ .a | .b }}", "not a function"),
    ("{{ $k, $v := .m }}", "declared only by range"),
    ("{{ 1 ", "unclosed action"),
    ('{{ "a\nb" }}', "bad string literal"),
])
def test_outside_the_subset_or_broken_templates_fail(source: str, message: str) -> None:
    with pytest.raises(render.TemplateError, match=message):
        run(source, {"m": {"k": 1}, "s": "x"})
