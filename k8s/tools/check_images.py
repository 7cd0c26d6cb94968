"""Deployment policy checks on a rendered overlay: images pinned by digest, narrow proxy trust.

    python k8s/tools/check_images.py k8s/overlays/prod            # placeholders allowed
    python k8s/tools/check_images.py --release k8s/overlays/prod  # the release job: real digests

Why: a tag can be re-pushed, so only `name@sha256:<64 hex>` says which bytes run. This machine
(and CI) cannot reach a registry to resolve digests, so the overlay carries the documented
all-zero placeholder digest and the release job, which pushed the image and knows its digest,
replaces it (kustomize edit set image …@sha256:…) and runs this with `--release`, which then
also refuses the placeholder. Also refused: trusting X-Forwarded-For from a network wider than
/24 (IPv4) or /64 (IPv6), since any caller inside it could choose its own rate-limit bucket.
Exit status 1 with one line per problem.
"""

from __future__ import annotations

import argparse
import importlib.util
import ipaddress
import re
import sys
from pathlib import Path
from typing import Any

PLACEHOLDER = "sha256:" + "0" * 64
_DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
_NARROWEST_V4, _NARROWEST_V6 = 24, 64


def _render(overlay: Path) -> list[dict[str, Any]]:
    spec = importlib.util.spec_from_file_location(
        "kustomize_lite", Path(__file__).with_name("kustomize_lite.py")
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    resources: list[dict[str, Any]] = module.render(overlay)
    return resources


def _pod_specs(resource: dict[str, Any]) -> list[dict[str, Any]]:
    spec = resource.get("spec") or {}
    if resource.get("kind") == "CronJob":
        spec = spec.get("jobTemplate", {}).get("spec", {})
    pod = spec.get("template", {}).get("spec")
    return [pod] if isinstance(pod, dict) else []


def problems(resources: list[dict[str, Any]], *, release: bool) -> list[str]:
    """Every policy violation in the rendered resources."""
    found: list[str] = []
    for resource in resources:
        where = f"{resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
        for pod in _pod_specs(resource):
            for container in pod.get("initContainers", []) + pod.get("containers", []):
                image = str(container.get("image", ""))
                if not _DIGEST.search(image):
                    found.append(
                        f"{where}: container {container.get('name')} image {image!r} is not digest-pinned"
                    )
                elif release and image.endswith(PLACEHOLDER):
                    found.append(
                        f"{where}: container {container.get('name')} still has the placeholder digest"
                    )
        if resource.get("kind") == "ConfigMap":
            trusted = (resource.get("data") or {}).get("CARBON_OPTIMIZER_TRUSTED_PROXIES")
            for entry in str(trusted or "").split(","):
                if not entry.strip():
                    continue
                network = ipaddress.ip_network(entry.strip(), strict=False)
                narrowest = _NARROWEST_V4 if network.version == 4 else _NARROWEST_V6
                if network.prefixlen < narrowest:
                    found.append(
                        f"{where}: trusts X-Forwarded-For from all of {network} (wider than /{narrowest})"
                    )
    return found


def main(argv: list[str] | None = None) -> int:
    """CLI entry point."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("overlay", type=Path)
    parser.add_argument("--release", action="store_true", help="also refuse the placeholder digest")
    args = parser.parse_args(argv)
    found = problems(_render(args.overlay), release=args.release)
    for line in found:
        print(f"FAIL: {line}", file=sys.stderr)
    if not found:
        print(f"{args.overlay}: every image digest-pinned, proxy trust narrow")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
