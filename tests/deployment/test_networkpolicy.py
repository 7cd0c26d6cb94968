"""Who may reach the API pods under the rendered NetworkPolicies (a small evaluator, no cluster).

Before: only the ingress controller and Prometheus were admitted, so schedulers, CI runners and
CronJobs inside the cluster, the main callers, could not reach the Service. Clients now opt in by
label (`carbon-optimizer/client: "true"` on the pod, in the API's namespace, or on its namespace).

The evaluator implements the parts of NetworkPolicy semantics these manifests use: a pod is
isolated for a direction when any policy selecting it lists that policy type; traffic is allowed
when some selecting policy has a rule whose peers match (podSelector alone = same namespace,
namespaceSelector alone = every pod there, both = AND) and whose ports include the port.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CLIENT = {"carbon-optimizer/client": "true"}


@dataclass(frozen=True)
class Pod:
    namespace: str
    labels: dict[str, str]
    namespace_labels: dict[str, str] = field(default_factory=dict)

    def ns_labels(self) -> dict[str, str]:
        return {"kubernetes.io/metadata.name": self.namespace, **self.namespace_labels}


def matches(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for expr in selector.get("matchExpressions", []):
        assert expr["operator"] in ("In", "NotIn", "Exists", "DoesNotExist"), expr
        value = labels.get(expr["key"])
        if expr["operator"] == "In" and value not in expr["values"]:
            return False
        if expr["operator"] == "NotIn" and value in expr["values"]:
            return False
        if expr["operator"] == "Exists" and value is None:
            return False
        if expr["operator"] == "DoesNotExist" and value is not None:
            return False
    return True


def peer_matches(peer: dict[str, Any], other: Pod, policy_namespace: str) -> bool:
    if "ipBlock" in peer:
        return False  # pod-to-pod traffic here
    pod_sel, ns_sel = peer.get("podSelector"), peer.get("namespaceSelector")
    if ns_sel is None and other.namespace != policy_namespace:
        return False
    if ns_sel is not None and not matches(ns_sel, other.ns_labels()):
        return False
    return pod_sel is None or matches(pod_sel, other.labels)


def allowed(policies: list[dict[str, Any]], target: Pod, source: Pod, port: int, direction: str) -> bool:
    """Is `direction` ("Ingress" of target / "Egress" of source) traffic source → target:port allowed?"""
    subject, other = (target, source) if direction == "Ingress" else (source, target)
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == subject.namespace
        and matches(p["spec"]["podSelector"], subject.labels)
        and direction in p["spec"].get("policyTypes", ["Ingress"])
    ]
    if not selecting:
        return True  # not isolated
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    for policy in selecting:
        for rule in policy["spec"].get(key) or []:
            ports = rule.get("ports")
            if ports and not any(int(p["port"]) == port for p in ports):
                continue
            peers = rule.get(peers_key)
            if not peers or any(peer_matches(peer, other, subject.namespace) for peer in peers):
                return True
    return False


def reachable(policies: list[dict[str, Any]], source: Pod, target: Pod, port: int) -> bool:
    return allowed(policies, target, source, port, "Egress") and allowed(
        policies, target, source, port, "Ingress"
    )


@pytest.fixture(scope="module", params=["dev", "prod"])
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    spec = importlib.util.spec_from_file_location("kustomize_lite", ROOT / "k8s/tools/kustomize_lite.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    resources: list[dict[str, Any]] = module.render(ROOT / "k8s/overlays" / request.param)
    policies = [r for r in resources if r["kind"] == "NetworkPolicy"]
    namespace = policies[0]["metadata"]["namespace"]
    return namespace, policies


def api_pod(namespace: str) -> Pod:
    return Pod(
        namespace, {"app.kubernetes.io/name": "carbon-optimizer", "app.kubernetes.io/component": "api"}
    )


def test_labelled_client_pod_in_the_namespace_reaches_the_api(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    ns, policies = rendered
    api = api_pod(ns)
    assert reachable(policies, Pod(ns, {"app": "nightly-batch", **CLIENT}), api, 8000)
    assert not reachable(policies, Pod(ns, {"app": "nightly-batch"}), api, 8000)  # not opted in


def test_pods_of_a_labelled_namespace_reach_the_api(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    ns, policies = rendered
    api = api_pod(ns)
    assert reachable(policies, Pod("ci", {"app": "runner"}, CLIENT), api, 8000)
    assert not reachable(policies, Pod("ci", {"app": "runner"}), api, 8000)
    # A pod label alone does not open the door from another namespace.
    assert not reachable(policies, Pod("ci", {"app": "runner", **CLIENT}), api, 8000)


def test_only_the_api_port_and_only_the_api(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    ns, policies = rendered
    api = api_pod(ns)
    client = Pod(ns, {"app": "scheduler", **CLIENT})
    assert not reachable(policies, client, api, 9000)
    redis = Pod(ns, {"app.kubernetes.io/name": "carbon-optimizer", "app.kubernetes.io/component": "redis"})
    assert not reachable(policies, client, redis, 6379)


def test_the_existing_callers_still_reach_the_api(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    ns, policies = rendered
    api = api_pod(ns)
    ingress = Pod("ingress-nginx", {"app.kubernetes.io/name": "ingress-nginx"})
    prometheus = Pod("monitoring", {"app.kubernetes.io/name": "prometheus"})
    assert reachable(policies, ingress, api, 8000)
    assert reachable(policies, prometheus, api, 9090)  # the metrics port
    assert not reachable(policies, prometheus, api, 8000)
    assert not reachable(policies, ingress, api, 9090)  # /metrics never through the Ingress
    assert not reachable(policies, Pod("default", {"app": "random"}), api, 8000)
