"""docs/deploy.md stays true: its topology table is the chart's values, the value keys it lists exist, and
the tradesim commands it runs inside the containers are ones the CLI accepts."""

from __future__ import annotations

import re
import shlex
from typing import Any

from tests.deploy.support import CHART, ROOT, load_yaml
from tradesim.cli import build_parser
from tradesim.services.roles import ROLES

DOC = ROOT / "docs" / "deploy.md"


def test_topology_table_is_the_values() -> None:
    values = load_yaml(CHART / "values.yaml")["services"]
    rows = re.findall(r"^\| (\w+) \| (\d+) \| (\d+) \|", DOC.read_text(), re.M)
    table = {role: (int(replicas), int(port)) for role, replicas, port in rows}
    assert set(table) == set(ROLES)
    assert table == {role: (v["replicas"], v["port"]) for role, v in values.items()}


def test_listed_value_keys_exist() -> None:
    values = load_yaml(CHART / "values.yaml")
    text = DOC.read_text()
    section = text[text.index("### Values"):text.index("## Changing the chart")]
    keys = re.findall(r"`((?:global|nats|postgres|services|monitoring|symbols|config|terminationGrace)[\w.]*)`",
                      section)
    assert keys
    for key in keys:
        node: Any = values
        for part in key.split("."):
            if part == "ROLE":
                part = "api"
            if part == "serviceType" and "serviceType" not in node:
                continue
            assert isinstance(node, dict) and part in node, f"docs/deploy.md names {key}, values.yaml has no {part}"
            node = node[part]


def test_commands_run_in_the_containers_are_accepted() -> None:
    text = re.sub(r"\\\n\s*", " ", DOC.read_text())
    commands = re.findall(r"exec (?:api|deploy/tradesim-api)(?: --)? (.+)", text)
    assert len(commands) >= 4
    for command in commands:
        argv = shlex.split(command)
        if argv[:2] == ["sh", "-c"]:
            argv = shlex.split(argv[2])
        assert argv[0] == "tradesim", command
        build_parser().parse_args([a.replace("$DB", "postgresql://h/db") for a in argv[1:]])
