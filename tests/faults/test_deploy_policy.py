"""Issue 11 items 5, 8, 11 and 12 in the rendered production overlay (no cluster needed)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _tool(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "k8s/tools" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def prod() -> list[dict[str, Any]]:
    rendered: list[dict[str, Any]] = _tool("kustomize_lite").render(ROOT / "k8s/overlays/prod")
    return rendered


def find(resources: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    return next(r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name)


def containers(resource: dict[str, Any]) -> list[dict[str, Any]]:
    pod = resource["spec"]["template"]["spec"]
    found: list[dict[str, Any]] = pod.get("initContainers", []) + pod["containers"]
    return found


def test_every_image_is_digest_pinned_and_proxy_trust_is_narrow(prod: list[dict[str, Any]]) -> None:
    check = _tool("check_images")
    assert check.problems(prod, release=False) == []
    # The release job must replace the documented placeholder digests.
    assert any("placeholder digest" in p for p in check.problems(prod, release=True))
    trusted = find(prod, "ConfigMap", "carbon-optimizer-config")["data"]["CARBON_OPTIMIZER_TRUSTED_PROXIES"]
    assert trusted != "10.0.0.0/8"


def test_policy_check_catches_tags_and_wide_trust() -> None:
    check = _tool("check_images")
    bad = [
        {
            "kind": "Deployment",
            "metadata": {"name": "x"},
            "spec": {"template": {"spec": {"containers": [{"name": "c", "image": "redis:7"}]}}},
        },
        {
            "kind": "ConfigMap",
            "metadata": {"name": "y"},
            "data": {"CARBON_OPTIMIZER_TRUSTED_PROXIES": "10.0.0.0/8"},
        },
    ]
    found = check.problems(bad, release=False)
    assert len(found) == 2


def test_redis_password_is_never_on_a_command_line(prod: list[dict[str, Any]]) -> None:
    for name in ("carbon-optimizer-redis", "carbon-optimizer-redis-counters"):
        for container in containers(find(prod, "Deployment", name)):
            argv = " ".join(container.get("command", []) + container.get("args", []))
            assert "requirepass" not in container.get("args", [])
            assert "$(REDIS_PASSWORD)" not in argv  # Kubernetes would expand it into the argv
            assert "--requirepass" not in argv


def test_counters_and_cache_have_their_own_eviction_policies(prod: list[dict[str, Any]]) -> None:
    def policy(name: str) -> str:
        (redis,) = [c for c in containers(find(prod, "Deployment", name)) if c["name"] == "redis"]
        args: list[str] = redis["args"]
        return args[args.index("--maxmemory-policy") + 1]

    assert policy("carbon-optimizer-redis") == "allkeys-lru"
    assert policy("carbon-optimizer-redis-counters") == "noeviction"
    cache_svc = find(prod, "Service", "carbon-optimizer-redis")["spec"]["selector"]
    counter_svc = find(prod, "Service", "carbon-optimizer-redis-counters")["spec"]["selector"]
    assert cache_svc != counter_svc  # each Service reaches exactly its own instance


def test_metrics_has_its_own_port_that_the_ingress_never_routes(prod: list[dict[str, Any]]) -> None:
    config = find(prod, "ConfigMap", "carbon-optimizer-config")["data"]
    (api,) = containers(find(prod, "Deployment", "carbon-optimizer"))
    ports = {p["name"]: p["containerPort"] for p in api["ports"]}
    assert ports["metrics"] == int(config["CARBON_OPTIMIZER_EDGE__METRICS_PORT"])
    monitor = find(prod, "ServiceMonitor", "carbon-optimizer")
    assert [e["port"] for e in monitor["spec"]["endpoints"]] == ["metrics"]
    ingress = find(prod, "Ingress", "carbon-optimizer")
    backends = [p["backend"]["service"]["port"] for r in ingress["spec"]["rules"] for p in r["http"]["paths"]]
    assert backends == [{"name": "http"}]
    assert config["CARBON_OPTIMIZER_DOCS_ENABLED"] == "false"
    assert config["CARBON_OPTIMIZER_EDGE__REPLICAS"] == str(
        find(prod, "Deployment", "carbon-optimizer")["spec"]["replicas"]
    )
