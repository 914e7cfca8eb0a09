"""Shared helpers of the deployment tests: the chart renderer, the Kubernetes shape checks, the checks a role
command must pass, and the Docker build-context rules.

The shape checks stand in for a cluster's API server (there is none here): they know the fields of the
objects the chart renders and the cross-references Kubernetes resolves at run time -- selectors to labels,
probe and Service ports to container ports, volumes, ConfigMaps and Secrets -- so a typo or a dangling
reference fails here rather than in a rollout.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml  # type: ignore[import-untyped]

from tradesim.cli import build_parser
from tradesim.services.config import SystemConfig, load_config
from tradesim.services.roles import ROLES, check_instance_id, check_role

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
CHART = DEPLOY / "helm" / "tradesim"
COMPOSE = DEPLOY / "docker-compose.yml"
MANIFESTS = DEPLOY / "k8s" / "tradesim.yaml"
COMPOSE_CONFIG = DEPLOY / "compose" / "tradesim.toml"
SEED_REPLICAS = {"venue": 1, "oms": 3, "accounts": 1, "risk": 2, "marketdata": 2, "agents": 1, "algos": 3,
                 "signals": 1, "api": 1}


def load_render() -> ModuleType:
    """deploy/render.py (a script, not a package module), imported once."""
    name = "tradesim_deploy_render"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DEPLOY / "render.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses resolve their module while the class is created
    spec.loader.exec_module(module)
    return module


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def compose_services() -> dict[str, dict[str, Any]]:
    services: dict[str, dict[str, Any]] = load_yaml(COMPOSE)["services"]
    return services


def tradesim_services(services: Mapping[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The compose services that run the tradesim image (every one but the infrastructure)."""
    return {name: s for name, s in services.items() if s.get("image", "").startswith("tradesim:")}


# --- role commands ----------------------------------------------------------------------------------

def parse_role_command(argv: list[str], config_files: Mapping[str, Path]) -> tuple[argparse.Namespace, SystemConfig]:
    """What `tradesim run` does with `argv` before any I/O: parse it with the real CLI parser, load the
    configuration it names (`config_files` maps the in-container path to the file that will be there), apply
    the command-line settings, and run the role's own checks (bus, database, instance id, what the config
    gives the role to do). Raises on anything `tradesim run` would refuse."""
    from tradesim.services.roles.processes import SERVICE_ROLES

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:
        raise AssertionError(f"the tradesim CLI refuses {argv}") from exc
    assert args.command == "run", argv
    assert args.role in ROLES, f"{argv}: role {args.role!r} is not one of {ROLES}"
    assert args.config in config_files, f"{argv}: --config {args.config} is not the mounted configuration"
    config = load_config(config_files[args.config], env={}).with_settings(
        host=args.host, port=args.port, data_dir=args.data_dir, bus=args.bus, db=args.db)
    check_role(args.role, config.settings.bus, config.settings.db)
    assert args.instance_id is not None, f"{argv}: no --instance-id"
    check_instance_id(args.instance_id)
    if args.role in SERVICE_ROLES:
        SERVICE_ROLES[args.role].check(config)
    return args, config


# --- Kubernetes object shape ------------------------------------------------------------------------

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
PORT_NAME = re.compile(r"^(?=.*[a-z])[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                       r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
QUANTITY = re.compile(r"^\d+(\.\d+)?(m|Ki|Mi|Gi|Ti|k|M|G|T)?$")
ENV_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

API_VERSIONS = {"Deployment": "apps/v1", "Service": "v1", "ConfigMap": "v1", "Secret": "v1",
                "ServiceMonitor": "monitoring.coreos.com/v1"}
FIELDS: dict[str, set[str]] = {
    "object": {"apiVersion", "kind", "metadata", "spec", "data", "stringData", "binaryData", "type", "immutable"},
    "metadata": {"name", "namespace", "labels", "annotations"},
    "deployment": {"replicas", "selector", "template", "strategy", "minReadySeconds", "revisionHistoryLimit",
                   "progressDeadlineSeconds", "paused"},
    "template": {"metadata", "spec"},
    "pod": {"containers", "initContainers", "volumes", "securityContext", "automountServiceAccountToken",
            "terminationGracePeriodSeconds", "serviceAccountName", "nodeSelector", "affinity", "tolerations",
            "imagePullSecrets", "topologySpreadConstraints", "priorityClassName", "enableServiceLinks"},
    "podSecurity": {"runAsNonRoot", "runAsUser", "runAsGroup", "fsGroup", "fsGroupChangePolicy",
                    "supplementalGroups", "seccompProfile"},
    "container": {"name", "image", "imagePullPolicy", "command", "args", "env", "envFrom", "ports", "startupProbe",
                  "livenessProbe", "readinessProbe", "resources", "securityContext", "volumeMounts", "workingDir",
                  "lifecycle"},
    "containerSecurity": {"allowPrivilegeEscalation", "readOnlyRootFilesystem", "capabilities", "runAsNonRoot",
                          "runAsUser", "runAsGroup", "privileged", "seccompProfile"},
    "probe": {"httpGet", "tcpSocket", "exec", "grpc", "initialDelaySeconds", "periodSeconds", "timeoutSeconds",
              "failureThreshold", "successThreshold", "terminationGracePeriodSeconds"},
    "httpGet": {"path", "port", "host", "scheme", "httpHeaders"},
    "containerPort": {"name", "containerPort", "protocol", "hostPort", "hostIP"},
    "env": {"name", "value", "valueFrom"},
    "valueFrom": {"fieldRef", "secretKeyRef", "configMapKeyRef", "resourceFieldRef"},
    "resources": {"requests", "limits"},
    "volumeMount": {"name", "mountPath", "readOnly", "subPath"},
    "volume": {"name", "configMap", "secret", "emptyDir", "persistentVolumeClaim"},
    "service": {"type", "selector", "ports", "clusterIP", "sessionAffinity", "externalTrafficPolicy",
                "loadBalancerSourceRanges"},
    "servicePort": {"name", "port", "targetPort", "protocol", "nodePort", "appProtocol"},
    "serviceMonitor": {"selector", "endpoints", "namespaceSelector", "jobLabel"},
    "endpoint": {"port", "path", "interval", "scrapeTimeout", "scheme"},
}
PROBE_PATHS = {"startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}


def _keys(obj: Any, kind: str, where: str) -> None:
    assert isinstance(obj, dict), f"{where}: expected an object, got {obj!r}"
    unknown = set(obj) - FIELDS[kind]
    assert not unknown, f"{where}: unknown field(s) {sorted(unknown)}"


def _labels(labels: Any, where: str) -> dict[str, str]:
    assert isinstance(labels, dict) and labels, f"{where}: labels missing"
    for key, value in labels.items():
        assert isinstance(key, str) and LABEL_KEY.match(key) and len(key.split("/")[-1]) <= 63, \
            f"{where}: label {key!r}"
        assert isinstance(value, str) and LABEL_VALUE.match(value) and len(value) <= 63, \
            f"{where}: label {key}={value!r} (label values are strings of at most 63 characters)"
    return labels


def _selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def validate_manifests(objects: Iterable[dict[str, Any]],
                       existing_secrets: Mapping[str, Iterable[str]] = {}) -> dict[tuple[str, str], dict[str, Any]]:
    """Checks every object and every reference between them; returns them by (kind, name).
    `existing_secrets` names Secrets (and their keys) that live in the cluster but not in these manifests."""
    by_key: dict[tuple[str, str], dict[str, Any]] = {}
    namespaces = set()
    for obj in objects:
        kind = obj.get("kind")
        assert kind in API_VERSIONS, f"unexpected kind {kind!r}"
        where = f"{kind}"
        _keys(obj, "object", where)
        assert obj.get("apiVersion") == API_VERSIONS[kind], f"{kind}: apiVersion {obj.get('apiVersion')!r}"
        meta: Any = obj.get("metadata")
        _keys(meta, "metadata", f"{kind}.metadata")
        name = meta.get("name")
        where = f"{kind}/{name}"
        assert isinstance(name, str) and DNS_LABEL.match(name) and len(name) <= 63, f"{where}: metadata.name"
        assert isinstance(meta.get("namespace"), str) and DNS_LABEL.match(meta["namespace"]), f"{where}: namespace"
        namespaces.add(meta["namespace"])
        _labels(meta.get("labels"), f"{where}.metadata.labels")
        assert (kind, name) not in by_key, f"{where} defined twice"
        by_key[(kind, name)] = obj
    assert len(namespaces) == 1, f"objects spread over namespaces {namespaces}"

    secrets = {name: set(obj.get("stringData", {})) | set(obj.get("data", {}))
               for (kind, name), obj in by_key.items() if kind == "Secret"}
    secrets.update({name: set(keys) for name, keys in existing_secrets.items()})
    configmaps = {name for kind, name in by_key if kind == "ConfigMap"}
    pods: dict[str, tuple[dict[str, str], dict[str, int]]] = {}  # deployment -> (pod labels, named ports)
    for (kind, name), obj in by_key.items():
        if kind == "Secret":
            assert obj.get("type") == "Opaque", f"Secret/{name}: type"
            for key, value in obj.get("stringData", {}).items():
                assert isinstance(value, str) and value, f"Secret/{name}: stringData.{key} must be a non-empty string"
        elif kind == "ConfigMap":
            assert obj.get("data") and all(isinstance(v, str) for v in obj["data"].values()), f"ConfigMap/{name}: data"
        elif kind == "Deployment":
            pods[name] = _validate_deployment(name, obj, secrets, configmaps)
    services: dict[str, dict[str, int]] = {}
    for (kind, name), obj in by_key.items():
        if kind == "Service":
            services[name] = _validate_service(name, obj, pods)
    for (kind, name), obj in by_key.items():
        if kind == "ServiceMonitor":
            _validate_service_monitor(name, obj, by_key, services)
    return by_key


def _validate_deployment(name: str, obj: dict[str, Any], secrets: Mapping[str, set[str]],
                         configmaps: set[str]) -> tuple[dict[str, str], dict[str, int]]:
    where = f"Deployment/{name}"
    spec: Any = obj.get("spec")
    _keys(spec, "deployment", f"{where}.spec")
    assert isinstance(spec.get("replicas"), int) and spec["replicas"] >= 0, f"{where}: replicas"
    selector = spec.get("selector", {}).get("matchLabels")
    assert set(spec.get("selector", {})) == {"matchLabels"}, f"{where}: selector"
    _labels(selector, f"{where}.spec.selector.matchLabels")
    template: Any = spec.get("template")
    _keys(template, "template", f"{where}.spec.template")
    _keys(template.get("metadata"), "metadata", f"{where}.spec.template.metadata")
    labels = _labels(template["metadata"].get("labels"), f"{where}.spec.template.metadata.labels")
    assert _selects(selector, labels), f"{where}: selector {selector} does not match the pod labels {labels}"
    for key, value in template["metadata"].get("annotations", {}).items():
        assert isinstance(value, str), f"{where}: annotation {key} must be a string"
    pod: Any = template.get("spec")
    _keys(pod, "pod", f"{where}.pod")
    _keys(pod.get("securityContext", {}), "podSecurity", f"{where}.pod.securityContext")
    volumes = {}
    for volume in pod.get("volumes", []):
        _keys(volume, "volume", f"{where}.volumes")
        sources = set(volume) - {"name"}
        assert len(sources) == 1, f"{where}: volume {volume.get('name')} needs exactly one source"
        assert volume["name"] not in volumes, f"{where}: volume {volume['name']} twice"
        volumes[volume["name"]] = volume
        if "configMap" in volume:
            assert volume["configMap"].get("name") in configmaps, f"{where}: volume {volume['name']}: no such ConfigMap"
    containers = pod.get("containers")
    assert isinstance(containers, list) and containers, f"{where}: no containers"
    named_ports: dict[str, int] = {}
    for container in containers:
        cwhere = f"{where}/{container.get('name')}"
        _keys(container, "container", cwhere)
        assert DNS_LABEL.match(container["name"]), f"{cwhere}: container name"
        assert isinstance(container.get("image"), str) and container["image"], f"{cwhere}: image"
        assert container.get("imagePullPolicy") in ("Always", "IfNotPresent", "Never"), f"{cwhere}: imagePullPolicy"
        _keys(container.get("securityContext", {}), "containerSecurity", f"{cwhere}.securityContext")
        ports: dict[str, int] = {}
        for port in container.get("ports", []):
            _keys(port, "containerPort", f"{cwhere}.ports")
            number = port.get("containerPort")
            assert isinstance(number, int) and 0 < number < 65536, f"{cwhere}: containerPort {number!r}"
            assert PORT_NAME.match(port.get("name", "")) and len(port["name"]) <= 15, f"{cwhere}: port name"
            assert port.get("protocol", "TCP") in ("TCP", "UDP", "SCTP"), f"{cwhere}: protocol"
            ports[port["name"]] = number
        named_ports.update(ports)
        for probe_kind, path in PROBE_PATHS.items():
            probe = container.get(probe_kind)
            assert probe is not None, f"{cwhere}: no {probe_kind}"
            _keys(probe, "probe", f"{cwhere}.{probe_kind}")
            _keys(probe.get("httpGet"), "httpGet", f"{cwhere}.{probe_kind}.httpGet")
            assert probe["httpGet"]["path"] == path, f"{cwhere}: {probe_kind} must GET {path}"
            target = probe["httpGet"]["port"]
            assert target in ports or target in ports.values(), \
                f"{cwhere}: {probe_kind} port {target!r} is not a port of the container ({ports})"
        defined: set[str] = set()
        for env in container.get("env", []):
            _keys(env, "env", f"{cwhere}.env")
            assert ("value" in env) != ("valueFrom" in env), f"{cwhere}: env {env.get('name')} needs value or valueFrom"
            if "value" in env:
                assert isinstance(env["value"], str), f"{cwhere}: env {env['name']} value must be a string"
            else:
                _keys(env["valueFrom"], "valueFrom", f"{cwhere}.env.{env['name']}")
                ref = env["valueFrom"].get("secretKeyRef")
                if ref is not None:
                    assert ref.get("name") in secrets, f"{cwhere}: env {env['name']}: no Secret {ref.get('name')}"
                    assert ref.get("key") in secrets[ref["name"]], \
                        f"{cwhere}: env {env['name']}: Secret {ref['name']} has no key {ref.get('key')}"
            defined.add(env["name"])
        for arg in [*container.get("command", []), *container.get("args", [])]:
            assert isinstance(arg, str), f"{cwhere}: argument {arg!r} must be a string"
            for ref in ENV_REF.findall(arg):
                assert ref in defined, f"{cwhere}: argument {arg} refers to undefined env {ref}"
        resources = container.get("resources", {})
        _keys(resources, "resources", f"{cwhere}.resources")
        for bound in resources.values():
            for resource, quantity in bound.items():
                assert resource in ("cpu", "memory", "ephemeral-storage"), f"{cwhere}: resource {resource}"
                assert QUANTITY.match(str(quantity)), f"{cwhere}: quantity {quantity!r}"
        mounts = set()
        for mount in container.get("volumeMounts", []):
            _keys(mount, "volumeMount", f"{cwhere}.volumeMounts")
            assert mount["name"] in volumes, f"{cwhere}: mount of unknown volume {mount['name']}"
            assert mount["mountPath"].startswith("/") and mount["mountPath"] not in mounts, f"{cwhere}: mountPath"
            mounts.add(mount["mountPath"])
    return labels, named_ports


def _validate_service(name: str, obj: dict[str, Any],
                      pods: Mapping[str, tuple[dict[str, str], dict[str, int]]]) -> dict[str, int]:
    where = f"Service/{name}"
    spec: Any = obj.get("spec")
    _keys(spec, "service", f"{where}.spec")
    assert spec.get("type", "ClusterIP") in ("ClusterIP", "NodePort", "LoadBalancer"), f"{where}: type"
    selector = _labels(spec.get("selector"), f"{where}.spec.selector")
    selected = {deployment: ports for deployment, (labels, ports) in pods.items() if _selects(selector, labels)}
    assert selected, f"{where}: selector {selector} matches no pod template"
    ports: dict[str, int] = {}
    for port in spec.get("ports", []):
        _keys(port, "servicePort", f"{where}.ports")
        assert isinstance(port.get("port"), int) and 0 < port["port"] < 65536, f"{where}: port"
        target = port.get("targetPort", port["port"])
        for deployment, pod_ports in selected.items():
            assert target in pod_ports or target in pod_ports.values(), \
                f"{where}: targetPort {target!r} is not a port of {deployment}'s pods ({pod_ports})"
        ports[port["name"]] = port["port"]
    assert ports, f"{where}: no ports"
    return ports


def _validate_service_monitor(name: str, obj: dict[str, Any], by_key: Mapping[tuple[str, str], dict[str, Any]],
                              services: Mapping[str, dict[str, int]]) -> None:
    where = f"ServiceMonitor/{name}"
    spec: Any = obj.get("spec")
    _keys(spec, "serviceMonitor", f"{where}.spec")
    selector = _labels(spec.get("selector", {}).get("matchLabels"), f"{where}.spec.selector.matchLabels")
    selected = [svc for svc in services if _selects(selector, by_key[("Service", svc)]["metadata"]["labels"])]
    assert selected, f"{where}: selects no Service"
    for endpoint in spec.get("endpoints", []):
        _keys(endpoint, "endpoint", f"{where}.endpoints")
        assert endpoint.get("path") == "/metrics", f"{where}: endpoints scrape /metrics"
        for svc in selected:
            assert endpoint.get("port") in services[svc], f"{where}: Service {svc} has no port {endpoint.get('port')}"


def container_argv(obj: dict[str, Any], secrets: Mapping[str, Mapping[str, str]]) -> list[str]:
    """A Deployment's `tradesim` arguments as the kubelet passes them: `$(VAR)` replaced by the container's
    env (a Secret's value, or the pod name a ReplicaSet would give the pod)."""
    container = obj["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = var["value"]
        elif "fieldRef" in var["valueFrom"]:
            assert var["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
            env[var["name"]] = f"{obj['metadata']['name']}-5d8f7b6c9d-x2k7q"
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = secrets[ref["name"]][ref["key"]]
    return [ENV_REF.sub(lambda m: env[m.group(1)], arg) for arg in container["args"]]


def config_symbols(text: str) -> list[str]:
    """The symbols of a tradesim TOML configuration's [[instruments]]."""
    return [entry["symbol"] for entry in tomllib.loads(text).get("instruments", [])]


# --- Docker build context ---------------------------------------------------------------------------

def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over slash-separated paths."""
    out = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out.append(pattern[i:end + 1])
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out) + "$")


def build_context(root: Path = ROOT) -> list[str]:
    """The files `docker build` sends for `root`, by its .dockerignore: the last matching pattern decides, and a
    pattern matching a parent directory matches everything under it (as Docker's patternmatcher does)."""
    rules: list[tuple[bool, str, re.Pattern[str]]] = []
    for line in (root / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = (line[1:] if negate else line).strip("/")
        rules.append((negate, pattern, _pattern(pattern)))

    def excluded(rel: str) -> bool:
        parts = rel.split("/")
        candidates = ["/".join(parts[:n]) for n in range(1, len(parts) + 1)]
        result = False
        for negate, _, rule in rules:
            if any(rule.match(candidate) for candidate in candidates):
                result = not negate
        return result

    def may_reinclude(directory: str) -> bool:
        # whether a `!` pattern could match below an excluded directory: only then is it worth walking
        # (the virtualenv and .git are large)
        top = directory.split("/")[0]
        return any(negate and (re.search(r"[*?\[]", p.split("/")[0]) or p.split("/")[0] == top)
                   for negate, p, _ in rules)

    kept: list[str] = []
    for current, dirs, files in os.walk(root):
        base = Path(current).relative_to(root).as_posix()
        prefix = "" if base == "." else base + "/"
        dirs[:] = sorted(d for d in dirs if not excluded(prefix + d) or may_reinclude(prefix + d))
        kept.extend(prefix + f for f in files if not excluded(prefix + f))
    return sorted(kept)
