#!/usr/bin/env python3
"""Validates the Kubernetes manifests in deploy/kubernetes offline (scripts/test-pkg.sh runs it
with kubernetes-validate installed):

- every built-in kind against the schemas kubernetes-validate bundles, for every Kubernetes
  version it knows (1.25 and later: OpenShift 4.12 and later), strictly: an unknown field is an
  error, as with `kubectl apply --validate=strict`;
- a custom resource against the openAPIV3Schema of its CustomResourceDefinition, vendored in
  deploy/kubernetes/schemas/ (the NetworkAttachmentDefinition: Multus's CRD), also strictly;
  the CRD files themselves as apiextensions.k8s.io/v1 resources;
- a NetworkAttachmentDefinition's spec.config as a JSON object of type egress-cni (the plugin
  itself reads it in tests/packaging.rs).

Then it makes sure that each kind of check can fail, on broken copies of the real manifests.

    python3 scripts/validate-manifests.py [DIR ...]     # default: deploy/kubernetes

Every DIR's *.yaml (scripts/test-pkg.sh adds the manifests `egress-router render` prints for
the EgressRouter examples of OpenShift's documentation); the CRDs are deploy/kubernetes/schemas'.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path
from typing import Any, Iterator

import jsonschema
import kubernetes_validate
import yaml
from kubernetes_validate import utils

Resource = dict[str, Any]
# A DNS-1123 subdomain, what metadata.name and namespace must be.
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def documents(path: Path) -> Iterator[Resource]:
    for doc in yaml.safe_load_all(path.read_text()):
        if doc is not None:
            yield doc


def strict(schema: Any) -> Any:
    """The schema with additionalProperties: false wherever an object lists its properties and
    does not preserve unknown fields (what the API server's pruning plus strict field validation
    amounts to)."""
    if isinstance(schema, dict):
        out = {k: strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not out.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [strict(v) for v in schema]
    return schema


class Validator:
    def __init__(self, schemas: Path) -> None:
        self.versions = sorted(set(utils.all_versions()), key=lambda v: tuple(map(int, v.split("."))))
        # (group/version, kind) -> the CRD's strict openAPIV3Schema
        self.crds: dict[tuple[str, str], Any] = {}
        self.crd_files = sorted(schemas.glob("*.yaml"))
        for path in self.crd_files:
            for crd in documents(path):
                spec = crd["spec"]
                for version in spec["versions"]:
                    key = (f"{spec['group']}/{version['name']}", spec["names"]["kind"])
                    self.crds[key] = strict(version["schema"]["openAPIV3Schema"])

    def errors(self, resource: Resource) -> list[str]:
        """Every problem of one resource, for every Kubernetes version; empty when valid."""
        key = (resource.get("apiVersion", ""), resource.get("kind", ""))
        if key in self.crds:
            found = [f"{'.'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
                     for e in jsonschema.Draft7Validator(self.crds[key]).iter_errors(resource)]
            meta = resource.get("metadata", {})
            for field in ("name", "namespace"):
                if not DNS_SUBDOMAIN.match(str(meta.get(field, ""))):
                    found.append(f"metadata.{field}: {meta.get(field)!r} is not a DNS-1123 name")
            if key[1] == "NetworkAttachmentDefinition":
                found += cni_config_errors(resource)
            return found
        found = []
        for version in self.versions:
            try:
                kubernetes_validate.validate(resource, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                found.append(f"Kubernetes {version}: {'.'.join(map(str, e.path)) or '(root)'}: {e.message}")
            except kubernetes_validate.SchemaNotFoundError:
                found.append(f"Kubernetes {version}: no schema for {key[0]} {key[1]} (and no CRD in schemas/)")
        return found


def cni_config_errors(nad: Resource) -> list[str]:
    try:
        config = json.loads(nad["spec"]["config"])
    except (KeyError, TypeError, json.JSONDecodeError) as e:
        return [f"spec.config is not a JSON CNI configuration: {e!r}"]
    if not isinstance(config, dict) or config.get("type") != "egress-cni":
        return [f"spec.config: type is {config.get('type') if isinstance(config, dict) else config!r}, not egress-cni"]
    if config.get("name") != nad["metadata"].get("name"):
        return [f"spec.config: name {config.get('name')!r} differs from metadata.name"]
    return []


def main() -> int:
    deploy = Path(__file__).resolve().parents[1] / "deploy" / "kubernetes"
    roots = [Path(a) for a in sys.argv[1:]] or [deploy]
    validator = Validator(deploy / "schemas")
    manifests = [p for root in roots for p in sorted(root.glob("*.yaml"))]
    if not manifests:
        print(f"FAIL no manifests in {', '.join(map(str, roots))}")
        return 1
    failed = 0
    checked: dict[str, Resource] = {}
    for path in manifests + validator.crd_files:
        for resource in documents(path):
            name = f"{path}: {resource.get('kind')}/{resource.get('metadata', {}).get('name')}"
            problems = validator.errors(resource)
            for p in problems:
                print(f"FAIL {name}: {p}")
            failed += bool(problems)
            checked.setdefault(resource["kind"], resource)
            print(f"{'FAIL' if problems else 'ok  '} {name}")
    print(f"{len(validator.versions)} Kubernetes versions ({validator.versions[0]} to {validator.versions[-1]}), strict")

    # Each kind of check must be able to fail: broken copies of the real resources.
    broken: list[tuple[str, Resource]] = []
    deployment = copy.deepcopy(checked["Deployment"])
    deployment["spec"]["template"]["spec"]["containers"][0]["imagee"] = "typo"
    broken.append(("a Deployment with an unknown container field", deployment))
    nad = copy.deepcopy(checked["NetworkAttachmentDefinition"])
    nad["spec"]["master"] = "ens4"
    broken.append(("a NetworkAttachmentDefinition with an unknown spec field", nad))
    nad = copy.deepcopy(checked["NetworkAttachmentDefinition"])
    nad["spec"]["config"] = nad["spec"]["config"].replace('"egress-cni"', '"macvlan"')
    broken.append(("a NetworkAttachmentDefinition for another plugin", nad))
    nad = copy.deepcopy(checked["NetworkAttachmentDefinition"])
    nad["spec"]["config"] = nad["spec"]["config"].rstrip().rstrip("}")
    broken.append(("a NetworkAttachmentDefinition whose config is not JSON", nad))
    for what, resource in broken:
        problems = validator.errors(resource)
        if not problems:
            print(f"FAIL the validator accepted {what}")
            failed += 1
        print(f"rejected {what}: {problems[0] if problems else '-'}")
    print(f"{len(broken)} broken copies rejected" if failed == 0 else f"{failed} failures")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
