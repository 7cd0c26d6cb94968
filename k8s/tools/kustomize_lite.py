"""Render this repo's kustomize overlays without the kustomize binary (a deliberate subset).

Why: CI validates the rendered manifests, and kustomize/kubectl come from neither PyPI, Debian
nor npm as a maintained package. Where `kubectl kustomize` exists (it does on the current CI
machine image), .ci/validate-deploy.sh uses it and also diffs this renderer's output against it,
so the subset below stays faithful; elsewhere this renderer is what gets validated.

Supported — exactly the features k8s/ uses, anything else is an error, never silently ignored:
`resources` (files and directories with a kustomization.yaml), `namespace`, `labels` (pairs,
`includeSelectors: false`: metadata labels only), `images` (newName/newTag/digest), `replicas`,
`patches` (inline JSON 6902 with a kind/name target) and `configMapGenerator` (files, with
`disableNameSuffixHash: true` and labels).

    python k8s/tools/kustomize_lite.py k8s/overlays/prod > prod.yaml
    python k8s/tools/kustomize_lite.py --compare rendered.yaml k8s/overlays/prod
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml

Resource = dict[str, Any]
CLUSTER_SCOPED = frozenset(
    {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition", "PriorityClass"}
)
SUPPORTED_KEYS = frozenset(
    {
        "apiVersion",
        "kind",
        "resources",
        "namespace",
        "labels",
        "images",
        "replicas",
        "patches",
        "configMapGenerator",
    }
)


class UnsupportedFeatureError(Exception):
    """The kustomization uses something this subset does not implement."""


def _load_documents(path: Path) -> list[Resource]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def _pointer(path: str) -> list[str]:
    if not path.startswith("/"):
        raise UnsupportedFeatureError(f"JSON pointer must start with '/': {path}")
    return [part.replace("~1", "/").replace("~0", "~") for part in path[1:].split("/")]


def _container_and_key(doc: Any, path: str) -> tuple[Any, str]:
    parts = _pointer(path)
    node = doc
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node, parts[-1]


def apply_json6902(doc: Resource, operations: list[dict[str, Any]]) -> None:
    """Apply add/replace/remove operations (the subset of RFC 6902 the overlays use)."""
    for operation in operations:
        op = operation["op"]
        parent, key = _container_and_key(doc, operation["path"])
        if isinstance(parent, list):
            index = len(parent) if key == "-" else int(key)
            if op == "add":
                parent.insert(index, copy.deepcopy(operation["value"]))
            elif op == "replace":
                parent[index] = copy.deepcopy(operation["value"])
            elif op == "remove":
                del parent[index]
            else:
                raise UnsupportedFeatureError(f"patch op {op}")
        else:
            if op in ("add", "replace"):
                if op == "replace" and key not in parent:
                    raise KeyError(f"replace of missing path {operation['path']}")
                parent[key] = copy.deepcopy(operation["value"])
            elif op == "remove":
                del parent[key]
            else:
                raise UnsupportedFeatureError(f"patch op {op}")


def _pod_spec(resource: Resource) -> dict[str, Any] | None:
    spec = resource.get("spec", {})
    if resource["kind"] == "CronJob":
        pod: dict[str, Any] | None = (
            spec.get("jobTemplate", {}).get("spec", {}).get("template", {}).get("spec")
        )
        return pod
    template = spec.get("template") if isinstance(spec, dict) else None
    return template.get("spec") if isinstance(template, dict) else None


def _apply_images(resources: list[Resource], images: list[dict[str, str]]) -> None:
    for resource in resources:
        pod = _pod_spec(resource)
        if not pod:
            continue
        for container in pod.get("initContainers", []) + pod.get("containers", []):
            reference, _, digest = container["image"].partition("@")
            name, _, tag = reference.partition(":")
            for image in images:
                if image["name"] == name:
                    new_name = image.get("newName", name)
                    new_tag = image.get("newTag", tag)
                    new_digest = image.get("digest", digest)
                    # Like kustomize 5: `name:tag@digest` (the digest is what the runtime pulls).
                    reference = f"{new_name}:{new_tag}" if new_tag else new_name
                    container["image"] = f"{reference}@{new_digest}" if new_digest else reference


def _generate_configmaps(base: Path, generators: list[dict[str, Any]]) -> list[Resource]:
    out: list[Resource] = []
    for generator in generators:
        options = generator.get("options", {})
        if not options.get("disableNameSuffixHash"):
            raise UnsupportedFeatureError("configMapGenerator without disableNameSuffixHash")
        if set(generator) - {"name", "files", "options"}:
            raise UnsupportedFeatureError(f"configMapGenerator keys {sorted(generator)}")
        data: dict[str, str] = {}
        for entry in generator.get("files", []):
            key, _, file_name = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
            data[key] = (base / file_name).read_text()
        metadata: dict[str, Any] = {"name": generator["name"]}
        if options.get("labels"):
            metadata["labels"] = dict(options["labels"])
        out.append({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata, "data": data})
    return out


def render(directory: Path) -> list[Resource]:
    """Render the kustomization in `directory` (recursively through its resources)."""
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    unknown = set(kustomization) - SUPPORTED_KEYS
    if unknown:
        raise UnsupportedFeatureError(f"{directory}: unsupported kustomization fields {sorted(unknown)}")
    resources: list[Resource] = []
    for entry in kustomization.get("resources", []):
        target = (directory / entry).resolve()
        resources.extend(render(target) if target.is_dir() else _load_documents(target))
    resources.extend(_generate_configmaps(directory, kustomization.get("configMapGenerator", [])))

    for patch in kustomization.get("patches", []):
        target = patch.get("target", {})
        if set(target) - {"kind", "name"} or "patch" not in patch:
            raise UnsupportedFeatureError(f"patch form {patch}")
        operations = yaml.safe_load(patch["patch"])
        matched = [
            r
            for r in resources
            if r["kind"] == target.get("kind", r["kind"]) and r["metadata"]["name"] == target.get("name")
        ]
        if not matched:
            raise KeyError(f"patch target not found: {target}")
        for resource in matched:
            apply_json6902(resource, operations)

    for replica in kustomization.get("replicas", []):
        for resource in resources:
            scalable = resource["kind"] in ("Deployment", "StatefulSet")
            if scalable and resource["metadata"]["name"] == replica["name"]:
                resource["spec"]["replicas"] = replica["count"]

    _apply_images(resources, kustomization.get("images", []))

    for group in kustomization.get("labels", []):
        if group.get("includeSelectors", False) or group.get("includeTemplates", False):
            raise UnsupportedFeatureError("labels with includeSelectors/includeTemplates")
        for resource in resources:
            resource["metadata"].setdefault("labels", {}).update(group["pairs"])

    namespace = kustomization.get("namespace")
    if namespace:
        for resource in resources:
            if resource["kind"] not in CLUSTER_SCOPED:
                resource["metadata"]["namespace"] = namespace
    return resources


def _key(resource: Resource) -> tuple[str, str, str]:
    meta = resource["metadata"]
    return resource["kind"], meta.get("namespace", ""), meta["name"]


def compare(rendered_file: Path, directory: Path) -> list[str]:
    """Differences between a kustomize-rendered file and this renderer's output (empty = same)."""
    theirs = {_key(r): r for r in _load_documents(rendered_file)}
    ours = {_key(r): r for r in render(directory)}
    problems = [f"only in kustomize output: {k}" for k in sorted(set(theirs) - set(ours))]
    problems += [f"only in kustomize_lite output: {k}" for k in sorted(set(ours) - set(theirs))]
    problems += [f"differs: {k}" for k in sorted(set(ours) & set(theirs)) if ours[k] != theirs[k]]
    return problems


def main(argv: list[str] | None = None) -> int:
    """CLI: render to stdout, or compare with another renderer's output."""
    parser = argparse.ArgumentParser(description="Render a kustomization (subset) to stdout.")
    parser.add_argument("directory", type=Path)
    parser.add_argument("--compare", type=Path, help="a file rendered by kustomize to diff against")
    args = parser.parse_args(argv)
    if args.compare:
        problems = compare(args.compare, args.directory)
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    yaml.safe_dump_all(render(args.directory), sys.stdout, sort_keys=False, width=100)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
