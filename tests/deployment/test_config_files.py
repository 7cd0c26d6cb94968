"""Invariants of the deployment files that no linter knows about (fast, no processes).

- .env.example lists every setting in Settings (a new setting without an example fails here);
- compose: healthchecks, `depends_on: service_healthy`, the observability profile, read-only app;
- Kubernetes (rendered with k8s/tools/kustomize_lite.py, which CI diffs against kubectl kustomize):
  the hardening and probes the issue asks for, and no Secret in the production overlay;
- gunicorn.conf.py: the factory, the worker class and the multiprocess hooks.
"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from carbon_optimizer.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
# PyYAML ships with uvicorn[standard]/schemathesis, but its stubs (types-PyYAML) are not a dev
# dependency: import it untyped so `mypy` passes on a fresh machine either way.
yaml: Any = importlib.import_module("yaml")


def env_names() -> set[str]:
    names: set[str] = set()
    for name, field in Settings.model_fields.items():
        section = field.annotation
        if isinstance(section, type) and issubclass(section, BaseModel):
            names |= {f"CARBON_OPTIMIZER_{name.upper()}__{sub.upper()}" for sub in section.model_fields}
        else:
            names.add(f"CARBON_OPTIMIZER_{name.upper()}")
    return names


def test_env_example_lists_every_setting_and_parses() -> None:
    text = (ROOT / ".env.example").read_text()
    listed = set(re.findall(r"^#? ?(CARBON_OPTIMIZER_[A-Z0-9_]+)=", text, re.M))
    missing = env_names() - listed
    assert not missing, f".env.example lacks {sorted(missing)}"
    assert not listed - env_names(), f".env.example has unknown settings {sorted(listed - env_names())}"
    settings = Settings(_env_file=ROOT / ".env.example")
    assert settings.api_keys == []  # secrets stay commented out


def load_compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def test_compose_app_and_redis_are_healthchecked_and_ordered() -> None:
    services = load_compose()["services"]
    assert services["app"]["depends_on"]["redis"]["condition"] == "service_healthy"
    for name in ("app", "redis"):
        assert services[name]["healthcheck"]["test"]
    assert services["app"]["read_only"] is True
    assert "/tmp" in services["app"]["tmpfs"][0]
    # the savings ledger's SQLite directory is a named volume (read-only root FS)
    data_dir = services["app"]["environment"]["CARBON_OPTIMIZER_DATABASE__DATA_DIR"]
    assert any(v.split(":")[1] == data_dir for v in services["app"]["volumes"])
    assert services["app"]["environment"]["CARBON_OPTIMIZER_REDIS__URL"].startswith("redis://redis:")
    for name in ("prometheus", "grafana"):
        assert services[name]["profiles"] == ["observability"]
    assert "profiles" not in services["app"]


def test_grafana_dashboard_copies_match_and_parse() -> None:
    canonical = (ROOT / "deploy/grafana/dashboards/carbon-optimizer.json").read_text()
    assert (ROOT / "k8s/base/grafana-dashboard.json").read_text() == canonical
    dashboard = json.loads(canonical)
    assert dashboard["uid"] == "carbon-optimizer"
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert any("http_request_duration_seconds_bucket" in e for e in exprs)
    assert any("carbon_optimizer_rate_limited_total" in e for e in exprs)


def _kustomize_lite() -> Any:
    spec = importlib.util.spec_from_file_location("kustomize_lite", ROOT / "k8s/tools/kustomize_lite.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def rendered() -> dict[str, list[dict[str, Any]]]:
    lite = _kustomize_lite()
    return {overlay: lite.render(ROOT / "k8s/overlays" / overlay) for overlay in ("dev", "prod")}


def find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name)


def test_prod_deployment_is_hardened_probed_and_spread(rendered: dict[str, list[dict[str, Any]]]) -> None:
    prod = rendered["prod"]
    deployment = find(prod, "Deployment", "carbon-optimizer")
    assert deployment["spec"]["replicas"] == 3
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} == {
        "topology.kubernetes.io/zone",
        "kubernetes.io/hostname",
    }
    (container,) = pod["containers"]
    assert container["image"].startswith("ghcr.io/example/carbon-optimizer:0.1.0@sha256:")
    security = container["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"]) & set(
        container["resources"]["limits"]
    )
    assert {m["mountPath"] for m in container["volumeMounts"]} == {"/tmp", "/var/lib/carbon-optimizer"}
    # The ledger's SQLite directory is a writable volume (the root FS is read-only).
    config = find(prod, "ConfigMap", "carbon-optimizer-config")["data"]
    assert config["CARBON_OPTIMIZER_DATABASE__DATA_DIR"] == "/var/lib/carbon-optimizer"
    volumes = {v["name"]: v for v in pod["volumes"]}
    ledger_mount = next(m for m in container["volumeMounts"] if m["mountPath"] == "/var/lib/carbon-optimizer")
    assert "emptyDir" in volumes[ledger_mount["name"]]
    graceful = int(
        find(prod, "ConfigMap", "carbon-optimizer-config")["data"][
            "CARBON_OPTIMIZER_SERVER__GRACEFUL_TIMEOUT_S"
        ]
    )
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > graceful + pre_stop


def test_prod_has_every_component_and_no_secret(rendered: dict[str, list[dict[str, Any]]]) -> None:
    kinds = {(r["kind"], r["metadata"]["name"]) for r in rendered["prod"]}
    for expected in [
        ("Service", "carbon-optimizer"),
        ("HorizontalPodAutoscaler", "carbon-optimizer"),
        ("PodDisruptionBudget", "carbon-optimizer"),
        ("ConfigMap", "carbon-optimizer-config"),
        ("NetworkPolicy", "default-deny-all"),
        ("Ingress", "carbon-optimizer"),
        ("Deployment", "carbon-optimizer-redis"),
        ("CronJob", "carbon-optimizer-cache-warmer"),
        ("ServiceMonitor", "carbon-optimizer"),
        ("PrometheusRule", "carbon-optimizer"),
        ("ConfigMap", "carbon-optimizer-grafana-dashboard"),
    ]:
        assert expected in kinds
    assert not any(kind == "Secret" for kind, _ in kinds)
    assert any(r["kind"] == "Secret" for r in rendered["dev"])
    ingress = find(rendered["prod"], "Ingress", "carbon-optimizer")
    assert ingress["spec"]["tls"][0]["secretName"]
    assert all(
        r["metadata"].get("namespace") == "carbon-optimizer"
        for r in rendered["prod"]
        if r["kind"] != "Namespace"
    )


def test_network_policy_egress_is_redis_dns_and_public_https(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    policy = find(rendered["prod"], "NetworkPolicy", "carbon-optimizer-api")
    ports = sorted((p["port"], p["protocol"]) for rule in policy["spec"]["egress"] for p in rule["ports"])
    # PostgreSQL (the shared savings ledger) on 5432, to one subnet only
    assert ports == [(53, "TCP"), (53, "UDP"), (443, "TCP"), (5432, "TCP"), (6379, "TCP")]
    postgres = next(rule for rule in policy["spec"]["egress"] if rule["ports"][0]["port"] == 5432)
    assert [peer["ipBlock"]["cidr"] for peer in postgres["to"]] == ["10.0.252.0/28"]
    https = next(rule for rule in policy["spec"]["egress"] if rule["ports"][0]["port"] == 443)
    assert "169.254.0.0/16" in https["to"][0]["ipBlock"]["except"]
    ingress_ports = {p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]}
    assert ingress_ports == {8000, 9090}
    # only Prometheus reaches the metrics port, and it reaches nothing else
    for rule in policy["spec"]["ingress"]:
        names = {
            f.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name")
            for f in rule["from"]
        }
        rule_ports = {p["port"] for p in rule["ports"]}
        assert (rule_ports == {9090}) == ("prometheus" in names), rule


def test_gunicorn_conf_uses_factory_worker_and_multiprocess_hooks() -> None:
    text = (ROOT / "gunicorn.conf.py").read_text()
    assert 'wsgi_app = "carbon_optimizer.app:create_app()"' in text
    assert 'worker_class = "carbon_optimizer.worker.EdgeUvicornWorker"' in text
    assert "retire_worker_metrics(worker.pid" in text
    assert "def on_starting(" in text
    assert "max_requests_jitter" in text
