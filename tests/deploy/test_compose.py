"""deploy/docker-compose.yml: NATS with JetStream on a volume, PostgreSQL, every role with seed 01's
replica counts, health checks on each role's /healthz, start order on health, the same roles and ports as
the Helm values, and the API published."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.deploy.support import (
    CHART,
    COMPOSE,
    COMPOSE_CONFIG,
    DEPLOY,
    SEED_REPLICAS,
    compose_services,
    load_yaml,
    tradesim_services,
)
from tradesim.services.roles import ROLES

HEALTH_URL = re.compile(r"http://127\.0\.0\.1:(\d+)(/\S*?)'")


def option(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_compose_parses_and_holds_the_infrastructure_and_every_role() -> None:
    compose = load_yaml(COMPOSE)
    assert set(compose) <= {"services", "volumes", "x-tradesim", "x-infra", "x-after-venue"}
    services = compose["services"]
    assert {"nats", "postgres"} <= set(services)
    roles = Counter(option(s["command"], "--role") for s in tradesim_services(services).values())
    assert dict(roles) == SEED_REPLICAS
    assert set(services) == {"nats", "postgres", *tradesim_services(services)}


def test_nats_runs_jetstream_on_a_file_store_volume() -> None:
    compose = load_yaml(COMPOSE)
    nats = compose["services"]["nats"]
    command = nats["command"]
    assert "-js" in command
    store = option(command, "-sd")
    mounts = {m.split(":")[1]: m.split(":")[0] for m in nats["volumes"]}
    assert store in mounts and mounts[store] in compose["volumes"], "the JetStream store survives the container"
    monitor = option(command, "-m")
    assert monitor in " ".join(nats["healthcheck"]["test"]) and "/healthz" in " ".join(nats["healthcheck"]["test"])


def test_postgres_credentials_match_every_database_url() -> None:
    services = compose_services()
    env = services["postgres"]["environment"]
    assert "pg_isready" in services["postgres"]["healthcheck"]["test"]
    for name, service in tradesim_services(services).items():
        url = urlsplit(option(service["command"], "--db"))
        assert url.scheme == "postgresql" and url.hostname == "postgres" and url.port == 5432, name
        assert (url.username, url.password, url.path) == (env["POSTGRES_USER"], env["POSTGRES_PASSWORD"],
                                                         "/" + env["POSTGRES_DB"]), name
        bus = urlsplit(option(service["command"], "--bus"))
        assert (bus.scheme, bus.hostname, bus.port) == ("nats", "nats", 4222), name


def test_every_role_is_health_checked_on_its_own_port() -> None:
    for name, service in tradesim_services(compose_services()).items():
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD", name
        match = HEALTH_URL.search(" ".join(test))
        assert match is not None, f"{name}: no health URL in {test}"
        assert match.group(1) == option(service["command"], "--port") and match.group(2) == "/healthz", name
        assert option(service["command"], "--host") == "0.0.0.0", f"{name}: reachable from the other containers"


def test_start_order_waits_for_healthy_dependencies() -> None:
    services = compose_services()
    for name, service in tradesim_services(services).items():
        depends: dict[str, Any] = service["depends_on"]
        assert {"nats", "postgres"} <= set(depends), name
        for dependency, condition in depends.items():
            assert condition == {"condition": "service_healthy"}, f"{name} -> {dependency}"
            assert "healthcheck" in services[dependency], f"{name} waits for {dependency}, which has no health check"
        role = option(service["command"], "--role")
        assert ("venue" in depends) == (role != "venue"), f"{name}: every role but the venue starts after it"


def test_roles_mount_the_rendered_configuration_and_keep_their_data() -> None:
    compose = load_yaml(COMPOSE)
    for name, service in tradesim_services(compose["services"]).items():
        mounts = {m.split(":")[1]: m for m in service["volumes"]}
        config = mounts[option(service["command"], "--config")]
        assert (DEPLOY / config.split(":")[0]).resolve() == COMPOSE_CONFIG and config.endswith(":ro"), name
        data = mounts[option(service["command"], "--data-dir")]
        assert data.split(":")[0] in compose["volumes"], f"{name}: data directory on a named volume"
        assert service["read_only"] is True, name


def test_instance_ids_are_unique_and_only_the_api_is_published() -> None:
    services = tradesim_services(compose_services())
    ids = [option(s["command"], "--instance-id") for s in services.values()]
    assert len(set(ids)) == len(ids)
    published = {name: s["ports"] for name, s in services.items() if "ports" in s}
    assert list(published) == ["api"]
    host_ip, host_port, container_port = published["api"][0].split(":")
    assert host_ip == "127.0.0.1", "published on the loopback interface only"
    assert container_port == option(services["api"]["command"], "--port") == host_port


def test_compose_and_helm_values_name_the_same_roles_ports_and_replicas() -> None:
    values = load_yaml(CHART / "values.yaml")["services"]
    services = tradesim_services(compose_services())
    ports: dict[str, set[int]] = {}
    replicas: Counter[str] = Counter()
    for service in services.values():
        role = option(service["command"], "--role")
        ports.setdefault(role, set()).add(int(option(service["command"], "--port")))
        replicas[role] += 1
    assert set(ports) == set(values) == set(ROLES)
    assert {role: p for role, p in ports.items()} == {role: {v["port"]} for role, v in values.items()}
    assert dict(replicas) == {role: v["replicas"] for role, v in values.items()}


def test_docker_compose_accepts_the_file(tmp_path: Path) -> None:
    """docker-compose's own schema check (`config -q`); needs no Docker daemon (`make test` installs it)."""
    if shutil.which("docker-compose") is None:
        pytest.fail("docker-compose is not installed: `apt-get install docker-compose` (Debian; `make test` does "
                    "it), or `pip install docker-compose`", pytrace=False)
    result = subprocess.run(["docker-compose", "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True,
                            timeout=60, cwd=tmp_path, check=False)
    assert result.returncode == 0, result.stderr
