"""Every container command in compose and in the rendered manifests is a real `tradesim run --role …`: the
CLI parser accepts it, the role exists, and the checks `tradesim run` makes before any I/O pass (bus,
database, instance id, a configuration that gives the role something to do). And `tradesim run --role R
--help` exits 0 for every role."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.deploy.support import (
    COMPOSE_CONFIG,
    ROOT,
    compose_services,
    container_argv,
    load_render,
    parse_role_command,
    tradesim_services,
)
from tradesim.services.roles import ROLES, RoleError

render = load_render()


def test_compose_commands_are_accepted_by_the_cli() -> None:
    seen = set()
    for name, service in tradesim_services(compose_services()).items():
        assert "entrypoint" not in service, f"{name}: the image's entrypoint (tradesim) runs the command"
        args, config = parse_role_command(service["command"], {"/etc/tradesim/tradesim.toml": COMPOSE_CONFIG})
        assert args.instance_id == name
        assert config.settings.port == args.port
        seen.add(args.role)
    assert seen == set(ROLES)


def test_manifest_commands_are_accepted_by_the_cli(tmp_path: Path) -> None:
    objs = [d.obj for d in render.render_chart()]
    secrets = {o["metadata"]["name"]: o["stringData"] for o in objs if o["kind"] == "Secret"}
    configmap = next(o for o in objs if o["kind"] == "ConfigMap")
    mounted = tmp_path / "tradesim.toml"
    mounted.write_text(configmap["data"]["tradesim.toml"])
    seen = set()
    for deployment in (o for o in objs if o["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        container = pod["containers"][0]
        mount = next(m for m in container["volumeMounts"] if m["name"] == "config")
        volume = next(v for v in pod["volumes"] if v["name"] == "config")
        assert volume["configMap"]["name"] == configmap["metadata"]["name"]
        args, _ = parse_role_command(container_argv(deployment, secrets),
                                     {f"{mount['mountPath']}/tradesim.toml": mounted})
        assert args.role == deployment["metadata"]["labels"]["app.kubernetes.io/component"]
        assert args.port == container["ports"][0]["containerPort"]
        assert args.instance_id.startswith(deployment["metadata"]["name"] + "-"), "the pod name"
        seen.add(args.role)
    assert seen == set(ROLES)


@pytest.mark.parametrize(("argv", "error"), [
    (["run", "--role", "gateway", "--instance-id", "x", "--config", "/c"], "the tradesim CLI refuses"),
    (["run", "--role", "oms", "--instance-id", "x", "--config", "/c", "--bus", "memory://",
      "--db", "postgresql://h/db"], "needs a shared bus"),
    (["run", "--role", "venue", "--instance-id", "x", "--config", "/c", "--bus", "nats://n:4222"], "needs --db"),
    (["run", "--role", "risk", "--instance-id", "bad id", "--config", "/c", "--bus", "nats://n:4222"],
     "invalid --instance-id"),
    (["run", "--role", "risk", "--instance-id", "r", "--config", "/elsewhere", "--bus", "nats://n:4222"],
     "not the mounted configuration"),
])
def test_the_command_check_rejects_what_tradesim_run_would(argv: list[str], error: str) -> None:
    with pytest.raises((AssertionError, RoleError), match=error):
        parse_role_command(argv, {"/c": COMPOSE_CONFIG})


def test_role_help_exits_zero_for_every_role() -> None:
    """The real executable, one process per role (run side by side: each pays the interpreter start)."""
    procs = {role: subprocess.Popen([sys.executable, "-m", "tradesim", "run", "--role", role, "--help"],
                                    cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for role in [*ROLES, "no-such-role"]}
    results = {role: (proc.communicate(timeout=120), proc.returncode) for role, proc in procs.items()}
    for role in ROLES:
        (out, err), code = results[role]
        assert code == 0, f"tradesim run --role {role} --help: exit {code}: {err}"
        assert "--role" in out and "--instance-id" in out
    (_, err), code = results["no-such-role"]
    assert code != 0 and "no-such-role" in err
