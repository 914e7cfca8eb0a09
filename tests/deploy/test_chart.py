"""The Helm chart: its values in seed 01's shape, manifests of the Kubernetes object shape with every
reference resolved, the committed deploy/k8s render equal to a fresh one, and the values it honours."""

from __future__ import annotations

import copy
import re
import tomllib
from typing import Any

import kubernetes_validate  # type: ignore[import-untyped]
import pytest
import yaml  # type: ignore[import-untyped]

from tests.deploy.support import (
    CHART,
    COMPOSE_CONFIG,
    MANIFESTS,
    ROOT,
    SEED_REPLICAS,
    config_symbols,
    load_render,
    load_yaml,
    validate_manifests,
)
from tradesim.services.config import load_config
from tradesim.services.roles import ROLES

render = load_render()


def objects(overrides: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return [d.obj for d in render.render_chart(overrides=overrides)]


def by_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def test_chart_metadata() -> None:
    chart = load_yaml(CHART / "Chart.yaml")
    assert chart["apiVersion"] == "v2" and chart["name"] == "tradesim" and chart["type"] == "application"
    assert re.fullmatch(r"\d+\.\d+\.\d+", chart["version"])
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert chart["appVersion"] == project["version"]


def test_values_have_seed_01_shape() -> None:
    values = load_yaml(CHART / "values.yaml")
    assert values["global"]["image"].startswith("tradesim:")
    assert values["nats"]["url"].startswith("nats://")
    assert values["postgres"]["url"].startswith("postgresql://")
    assert set(values["monitoring"]) == {"enabled", "interval"}
    assert set(values["services"]) == set(ROLES)
    for role, service in values["services"].items():
        assert service["replicas"] == SEED_REPLICAS[role], role
        assert isinstance(service["port"], int), role
        assert set(service["resources"]) == {"requests", "limits"}, role
    ports = [s["port"] for s in values["services"].values()]
    assert len(set(ports)) == len(ports), "every role has its own port"
    assert [s["symbol"] for s in values["symbols"]] == ["IF2501.CFFEX", "IC2501.CFFEX", "AAPL.SIM", "MSFT.SIM"]


def test_committed_manifests_and_compose_config_equal_a_fresh_render() -> None:
    for path, text in render.outputs():
        assert path.read_text() == text, f"{path} is stale: run python deploy/render.py"
    assert render.main(["--check"]) == 0


def test_committed_manifests_parse_to_the_rendered_objects() -> None:
    committed = [doc for doc in yaml.safe_load_all(MANIFESTS.read_text()) if doc is not None]
    assert committed == objects()


def test_default_render_has_the_kubernetes_shape() -> None:
    objs = objects()
    validate_manifests(objs)
    kinds = [o["kind"] for o in objs]
    assert kinds == ["Secret", "ConfigMap", *["Service"] * len(ROLES), *["Deployment"] * len(ROLES)], \
        "helm's install order, no ServiceMonitor unless monitoring is enabled"
    deployments = by_kind(objs, "Deployment")
    services = by_kind(objs, "Service")
    values = load_yaml(CHART / "values.yaml")
    for role, service in values["services"].items():
        deployment = deployments[f"tradesim-{role}"]
        assert deployment["spec"]["replicas"] == service["replicas"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"] == [{"name": "http", "containerPort": service["port"], "protocol": "TCP"}]
        assert container["resources"] == service["resources"]
        assert container["image"] == values["global"]["image"]
        assert "command" not in container, "the image's entrypoint (tradesim) runs the args"
        assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(service["port"])
        svc = services[f"tradesim-{role}"]
        assert svc["spec"]["ports"][0]["port"] == service["port"]
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == role
    assert services["tradesim-api"]["spec"]["type"] == "ClusterIP"


def test_configmap_carries_the_compose_configuration_and_it_loads() -> None:
    objs = objects()
    text = by_kind(objs, "ConfigMap")["tradesim-config"]["data"]["tradesim.toml"]
    assert text == COMPOSE_CONFIG.read_text()
    config = load_config(COMPOSE_CONFIG, env={})
    values = load_yaml(CHART / "values.yaml")
    assert config_symbols(text) == [s["symbol"] for s in values["symbols"]]
    assert [i.symbol for i in config.instruments] == config_symbols(text)
    assert {entry.symbol for entry in config.agents.symbols} <= set(config_symbols(text))


def test_config_checksum_changes_with_the_config() -> None:
    def checksums(objs: list[dict[str, Any]]) -> set[str]:
        return {d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
                for d in by_kind(objs, "Deployment").values()}

    before = checksums(objects())
    assert len(before) == 1
    after = checksums(objects({"config": "[system]\nsnapshot_every = 500\n"}))
    assert len(after) == 1 and after != before


def test_values_overrides_reach_the_manifests() -> None:
    objs = objects({"services": {"oms": {"replicas": 5}, "api": {"serviceType": "LoadBalancer"}},
                    "global": {"image": "registry.example/tradesim:1.2.3", "namespace": "trading"},
                    "nats": {"url": "nats://nats.messaging:4222"}})
    validate_manifests(objs)
    deployments = by_kind(objs, "Deployment")
    assert deployments["tradesim-oms"]["spec"]["replicas"] == 5
    assert deployments["tradesim-venue"]["spec"]["replicas"] == 1
    assert by_kind(objs, "Service")["tradesim-api"]["spec"]["type"] == "LoadBalancer"
    assert {o["metadata"]["namespace"] for o in objs} == {"trading"}
    for deployment in deployments.values():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["image"] == "registry.example/tradesim:1.2.3"
        assert container["args"][container["args"].index("--bus") + 1] == "nats://nats.messaging:4222"


def test_monitoring_enabled_adds_a_service_monitor_for_every_role() -> None:
    objs = objects({"monitoring": {"enabled": True, "interval": "15s"}})
    validate_manifests(objs)
    monitors = by_kind(objs, "ServiceMonitor")
    assert list(monitors) == ["tradesim"] and objs[-1]["kind"] == "ServiceMonitor"
    spec = monitors["tradesim"]["spec"]
    assert spec["endpoints"] == [{"port": "http", "path": "/metrics", "interval": "15s"}]
    selected = [name for name, svc in by_kind(objs, "Service").items()
                if all(svc["metadata"]["labels"].get(k) == v for k, v in spec["selector"]["matchLabels"].items())]
    assert sorted(selected) == sorted(f"tradesim-{role}" for role in ROLES)


def test_existing_database_secret_replaces_the_charts_own() -> None:
    objs = objects({"postgres": {"existingSecret": "pg-app", "secretKey": "uri", "url": ""}})
    assert not by_kind(objs, "Secret")
    for deployment in by_kind(objs, "Deployment").values():
        env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert env["TRADESIM_DB"]["valueFrom"]["secretKeyRef"] == {"name": "pg-app", "key": "uri"}
    validate_manifests(objs, existing_secrets={"pg-app": ["uri"]})
    with pytest.raises(AssertionError, match="no Secret pg-app"):
        validate_manifests(objs)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"nats": {"url": ""}}, "nats.url is required"),
    ({"postgres": {"url": ""}}, r"postgres.url \(or postgres.existingSecret\) is required"),
])
def test_missing_required_values_fail_the_render(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(render.TemplateError, match=message):
        render.render_chart(overrides=overrides)


def _broken(mutate: Any) -> list[dict[str, Any]]:
    objs = copy.deepcopy(objects())
    mutate(by_kind(objs, "Deployment")["tradesim-oms"], by_kind(objs, "Service")["tradesim-oms"])
    return objs


def _container(deployment: dict[str, Any]) -> dict[str, Any]:
    container: dict[str, Any] = deployment["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize(("mutate", "message"), [
    (lambda d, s: d["spec"]["selector"]["matchLabels"].update({"app.kubernetes.io/component": "risk"}),
     "does not match the pod labels"),
    (lambda d, s: _container(d)["readinessProbe"]["httpGet"].update({"path": "/healthz"}), "must GET /readyz"),
    (lambda d, s: _container(d)["livenessProbe"]["httpGet"].update({"port": "metrics"}), "is not a port"),
    (lambda d, s: _container(d).update({"readinessProbes": _container(d).pop("readinessProbe")}), "unknown field"),
    (lambda d, s: s["spec"]["ports"][0].update({"targetPort": "web"}), "targetPort 'web'"),
    (lambda d, s: s["spec"]["selector"].update({"app.kubernetes.io/component": "nope"}), "matches no pod"),
    (lambda d, s: d["spec"]["template"]["spec"]["volumes"][0]["configMap"].update({"name": "other"}),
     "no such ConfigMap"),
    (lambda d, s: _container(d)["args"].append("$(UNDEFINED)"), "undefined env UNDEFINED"),
    (lambda d, s: d.update({"apiVersion": "extensions/v1beta1"}), "apiVersion"),
    (lambda d, s: _container(d)["resources"]["limits"].update({"memory": "lots"}), "quantity"),
])
def test_the_shape_check_rejects_broken_manifests(mutate: Any, message: str) -> None:
    with pytest.raises(AssertionError, match=message):
        validate_manifests(_broken(mutate))


# The Kubernetes API's own OpenAPI schemas (kubernetes-validate bundles them per release): every object
# the chart renders, under the overrides above, is a valid object of its kind, with no unknown field.
# The oldest release the chart supports and the newest one the package knows.
SCHEMA_VERSIONS = ("1.25.0", kubernetes_validate.latest_version())
RENDERS: list[dict[str, Any]] = [
    {},
    {"services": {"oms": {"replicas": 5}, "api": {"serviceType": "LoadBalancer"}},
     "global": {"image": "registry.example/tradesim:1.2.3", "namespace": "trading"}},
    {"monitoring": {"enabled": True, "interval": "15s"}},
    {"postgres": {"existingSecret": "pg-app", "secretKey": "uri", "url": ""}},
]
CUSTOM_KINDS = {"ServiceMonitor"}  # a CRD (prometheus-operator): no built-in schema; shape checked above


@pytest.mark.parametrize("version", SCHEMA_VERSIONS)
@pytest.mark.parametrize("overrides", RENDERS, ids=["default", "overrides", "monitoring", "existing-secret"])
def test_every_rendered_object_validates_against_the_kubernetes_schema(overrides: dict[str, Any],
                                                                       version: str) -> None:
    checked = []
    for obj in objects(overrides):
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{obj['kind']}/{obj['metadata']['name']} against Kubernetes {version}: {exc.message}")
        checked.append(obj["kind"])
    assert {"Deployment", "Service", "ConfigMap"} <= set(checked)


def test_the_committed_manifests_validate_and_the_schema_check_can_fail() -> None:
    docs = [d for d in yaml.safe_load_all(MANIFESTS.read_text()) if d]
    for doc in docs:
        kubernetes_validate.validate(doc, SCHEMA_VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = [8000]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SCHEMA_VERSIONS[-1], strict=True)
    deployment = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment"))
    deployment["spec"]["replica"] = 2  # a typo: strict validation refuses unknown fields
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SCHEMA_VERSIONS[-1], strict=True)
