#!/usr/bin/env python3
"""Cross-reference check of the rendered kustomize overlays (see README.md, "Validate").

Schema validation (kubernetes-validate) cannot see mistakes between resources, so this
checks what ties them together:

- every EWPM_* name set in the ConfigMap or a container's env is a real setting (parsed from
  the kit's services/kit/src/settings.rs, each registered module's
  services/<module>/src/settings.rs and the registry in src/lib.rs; the binary rejects
  unknown ones);
- every configMapRef / secretKeyRef names the ConfigMap / a key of base/secret.example.yaml;
- each `ewpm serve <x>` container sets the variables (from the Secret) that command needs,
  and the gateway gets no DATABASE_URL; every serve target of the registry (each
  module, each module's parts `<module>-<part>`, gateway) has a NEEDS entry and runs in a
  Deployment, and no Deployment serves anything else;
- pods set enableServiceLinks: false; probe and prometheus.io/port ports are container ports;
- every Service selects pods of some Deployment, its targetPorts are named container ports;
- every EWPM_SERVICES__* setting is set in the ConfigMap and points at a Service port;
  every HPA and PDB targets a Deployment; a Deployment with an HPA leaves `replicas` to it
  (outside dev and local);
- every EWPM pod runs as its own ServiceAccount, which exists and mounts no API token, and
  every EWPM Deployment spreads its pods (topologySpreadConstraints selecting them);
- NetworkPolicies: a default deny covers the namespace; every EWPM workload has a policy of
  its own; every pod selector of a policy selects some pod, and every port it names is a
  container port of the pods it applies to; every egress to a pod on a port is admitted by
  an ingress rule of that pod's policy, and every ingress from a pod is matched by that pod's
  egress (one side alone is a dead or a broken path);
- the Ingress's backend is a Service port.

Before those, every overlay (dev, prod, local) is rendered (`kubectl kustomize`; where
kubectl is missing, a small renderer here that covers what these overlays use: resources,
namespace, images, JSON 6902 patches with a target, secretGenerator) and every resource is
validated strictly (unknown fields are errors) against the Kubernetes versions in VERSIONS
with kubernetes-validate's schemas.

Usage: python3 k8s/check.py  (from the repository root; needs PyYAML and kubernetes-validate:
`pip install kubernetes-validate`). Exits non-zero with one line per problem.
"""

import copy
import hashlib
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import yaml

try:
    import kubernetes_validate
except ImportError:
    sys.exit("k8s/check.py needs kubernetes-validate: pip install kubernetes-validate")

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
SETTINGS_RS = ROOT / "services/kit/src/settings.rs"
REGISTRY_RS = ROOT / "src/lib.rs"

# Kubernetes versions every resource must validate against (strict).
VERSIONS = ("1.27.0", "1.31.0", "1.34.0")
OVERLAYS = ("dev", "prod", "local")

# Secret keys each `ewpm serve <command>` must get, and those it must not.
NEEDS = {
    "challenge": {"DATABASE_URL", "EWPM_AUTH__SECRET"},
    "scan": {"DATABASE_URL", "EWPM_AUTH__SECRET"},
    "scan-projector": {"DATABASE_URL", "EWPM_AUTH__SECRET"},
    "progress": {"DATABASE_URL", "REDIS_URL", "EWPM_AUTH__SECRET"},
    "progress-writer": {"DATABASE_URL", "REDIS_URL", "EWPM_AUTH__SECRET"},
    "leaderboard": {"DATABASE_URL", "REDIS_URL", "EWPM_AUTH__SECRET"},
    "incentive": {"DATABASE_URL", "REDIS_URL", "EWPM_AUTH__SECRET"},
    "incentive-processor": {"DATABASE_URL", "REDIS_URL", "EWPM_AUTH__SECRET"},
    "quiz": {"DATABASE_URL", "REDIS_URL", "EWPM_AUTH__SECRET"},
    "quiz-relay": {"DATABASE_URL", "REDIS_URL", "EWPM_AUTH__SECRET"},
    "engagement": {"DATABASE_URL", "REDIS_URL", "EWPM_AUTH__SECRET"},
    "engagement-persister": {"DATABASE_URL", "REDIS_URL", "EWPM_AUTH__SECRET"},
    "gateway": {"EWPM_AUTH__SECRET"},
}
FORBIDDEN = {"gateway": {"DATABASE_URL"}}


def struct_leaves(path, root, prefix):
    """EWPM_* names of every leaf of struct `root` in the Rust file at `path`."""
    text = path.read_text()
    structs = {}
    for m in re.finditer(r"pub struct (\w+) \{(.*?)\n\}", text, re.S):
        structs[m.group(1)] = re.findall(r"^\s*pub (\w+): ([\w<>:, ]+),", m.group(2), re.M)
    names = set()

    def walk(struct, prefix):
        for field, ty in structs[struct]:
            key = f"{prefix}__{field.upper()}" if prefix else f"EWPM_{field.upper()}"
            if ty in structs:
                walk(ty, key)
            elif not ty.startswith("BTreeMap"):
                names.add(key)

    walk(root, prefix)
    return names


def settings_names():
    """EWPM_* names of every setting: the kit's `Settings`, `EWPM_SERVICES__<MODULE>` for
    each registered module, and each module's own section."""
    names = struct_leaves(SETTINGS_RS, "Settings", "")
    modules = re.findall(r"&ewpm_(\w+)::MODULE", REGISTRY_RS.read_text())
    for module in modules:
        names.add(f"EWPM_SERVICES__{module.upper()}")
        path = ROOT / "services" / module / "src/settings.rs"
        if path.exists():
            text = path.read_text()
            root = re.search(r"Section::of::<(\w+)>", (ROOT / "services" / module / "src/module.rs").read_text())
            if root:
                names |= struct_leaves(path, root.group(1), f"EWPM_{module.upper()}")
    return names


def serve_targets():
    """What `ewpm serve` takes, as the registry in src/lib.rs defines it: every module, every
    module's part (`<module>-<part>`, from the `parts()` of services/<module>/src/module.rs)
    and `gateway`."""
    targets = {"gateway"}
    for module in re.findall(r"&ewpm_(\w+)::MODULE", REGISTRY_RS.read_text()):
        targets.add(module)
        path = ROOT / "services" / module / "src/module.rs"
        if path.exists():
            parts = re.search(r"fn parts\(&self\)[^{]*\{(.*?)\n    \}", path.read_text(), re.S)
            if parts:
                names = re.findall(r'name: "([\w-]+)"', parts.group(1))
                targets |= {f"{module}-{name}" for name in names}
    return targets


def render(overlay):
    if shutil.which("kubectl"):
        out = subprocess.run(
            ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
            check=True, capture_output=True, text=True,
        ).stdout
        return [d for d in yaml.safe_load_all(out) if d]
    return kustomize(K8S / "overlays" / overlay)


def kustomize(path):
    """The resources of the kustomization at `path`, for what these overlays use (see the
    module doc); anything else in a kustomization.yaml is an error, not silently skipped."""
    k = yaml.safe_load((path / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "namespace", "resources", "images", "patches",
             "secretGenerator"}
    if set(k) - known:
        sys.exit(f"{path}: kustomization fields {sorted(set(k) - known)} need kubectl")
    docs = []
    for r in k.get("resources", []):
        target = (path / r).resolve()
        if target.is_dir():
            docs += kustomize(target)
        else:
            docs += [d for d in yaml.safe_load_all(target.read_text()) if d]
    renamed = {}
    for g in k.get("secretGenerator", []):
        data = dict(lit.split("=", 1) for lit in g.get("literals", []))
        secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                  "metadata": {"name": g["name"]}, "stringData": data}
        digest = hashlib.sha256(repr(sorted(data.items())).encode()).hexdigest()[:10]
        renamed[g["name"]] = f"{g['name']}-{digest}"
        secret["metadata"]["name"] = renamed[g["name"]]
        docs.append(secret)
    for d in docs:
        if "namespace" in k:
            d["metadata"]["namespace"] = k["namespace"]
        for c in containers_of(d):
            for img in k.get("images", []):
                if c.get("image", "").split(":")[0] == img["name"]:
                    c["image"] = f"{img['name']}:{img['newTag']}"
            for e in c.get("env", []):
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref and ref["name"] in renamed:
                    ref["name"] = renamed[ref["name"]]
    for p in k.get("patches", []):
        t = p["target"]
        for d in docs:
            group, _, version = d["apiVersion"].rpartition("/")
            if (d["kind"] == t.get("kind") and version == t.get("version", version)
                    and group == t.get("group", group)
                    and re.fullmatch(t.get("name", ".*"), d["metadata"]["name"])):
                for op in yaml.safe_load(p["patch"]):
                    apply_op(d, op)
    return docs


def containers_of(d):
    spec = d.get("spec", {})
    tmpl = spec.get("template") or spec.get("jobTemplate", {}).get("spec", {}).get("template")
    return (tmpl or {}).get("spec", {}).get("containers", [])


def apply_op(doc, op):
    """One JSON 6902 `add` or `replace` (what these overlays use)."""
    if op["op"] not in ("add", "replace"):
        sys.exit(f"patch op {op['op']} needs kubectl")
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node = doc
    for p in parents:
        node = node[int(p)] if isinstance(node, list) else node[p]
    if isinstance(node, list):
        node[int(last)] = copy.deepcopy(op["value"])
    else:
        node[last] = copy.deepcopy(op["value"])


def validate_schemas(overlay, docs, problems):
    """Strict schema validation of every resource against each of VERSIONS."""
    for version in VERSIONS:
        for d in docs:
            try:
                kubernetes_validate.validate(d, version, strict=True)
            except kubernetes_validate.ValidationError as e:
                first = str(e).splitlines()[0]
                problems.append(f"{overlay}: {d['kind']}/{d['metadata']['name']} is invalid for "
                                f"Kubernetes {version}: {first}")


def check(overlay, docs, allowed, secret_keys, serve_names, problems):
    def bad(msg):
        problems.append(f"{overlay}: {msg}")

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    configmaps = by_kind.get("ConfigMap", {})
    # EWPM's own Deployments (overlays/local adds Redis, which is none of them).
    deployments = {n: d for n, d in by_kind.get("Deployment", {}).items()
                   if d["metadata"].get("labels", {}).get("app.kubernetes.io/part-of") == "ewpm"}
    secrets = by_kind.get("Secret", {})
    services = by_kind.get("Service", {})
    hpas = by_kind.get("HorizontalPodAutoscaler", {})

    for name, cm in configmaps.items():
        for key in cm.get("data", {}):
            if key.startswith("EWPM_") and key not in allowed:
                bad(f"ConfigMap {name}: unknown setting {key}")
    # Every service address defaults to 127.0.0.1 (the embedded mode), which in a pod is the
    # pod itself: a missing one fails only when first called.
    set_in_configmaps = {k for cm in configmaps.values() for k in cm.get("data", {})}
    for key in sorted(k for k in allowed if k.startswith("EWPM_SERVICES__")):
        if key not in set_in_configmaps:
            bad(f"ConfigMap: {key} is not set (its default is the embedded mode's loopback)")

    served = set()
    workloads = dict(deployments)
    workloads.update({f"job/{n}": j for n, j in by_kind.get("Job", {}).items()})
    for wname, w in workloads.items():
        pod = w["spec"]["template"]
        spec = pod["spec"]
        if spec.get("enableServiceLinks") is not False:
            bad(f"{wname}: enableServiceLinks is not false")
        ports = set()
        for c in spec["containers"]:
            named = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            ports |= set(named.values())
            for ref in c.get("envFrom", []):
                cm = ref.get("configMapRef", {}).get("name")
                if cm and cm not in configmaps:
                    bad(f"{wname}: envFrom names missing ConfigMap {cm}")
            got = set()
            for e in c.get("env", []):
                if e["name"].startswith("EWPM_") and e["name"] not in allowed:
                    bad(f"{wname}: unknown setting {e['name']}")
                ref = e.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    rendered = secrets.get(ref["name"])
                    if rendered is not None:
                        keys = set(rendered.get("data", {})) | set(rendered.get("stringData", {}))
                        if ref["key"] not in keys:
                            bad(f"{wname}: secretKeyRef {ref['name']}/{ref['key']}: no such key")
                    elif ref["name"] != "ewpm-secrets" or ref["key"] not in secret_keys:
                        bad(f"{wname}: secretKeyRef {ref['name']}/{ref['key']} not in "
                            "secret.example.yaml")
                got.add(e["name"])
            args = c.get("args", [])
            if args[:1] == ["serve"]:
                cmd = args[1]
                served.add(cmd)
                if cmd not in serve_names:
                    bad(f"{wname}: serve {cmd} is no module, part or gateway of src/lib.rs")
                if cmd not in NEEDS:
                    bad(f"{wname}: unknown command serve {cmd} (add it to NEEDS in check.py)")
                    continue
                for key in sorted(NEEDS[cmd] - got):
                    bad(f"{wname}: serve {cmd} needs {key}")
                for key in sorted(FORBIDDEN.get(cmd, set()) & got):
                    bad(f"{wname}: serve {cmd} must not get {key}")
            for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                p = c.get(probe)
                if not p:
                    continue
                for kind in ("grpc", "httpGet", "tcpSocket"):
                    if kind in p:
                        port = p[kind]["port"]
                        port = named.get(port, port)
                        if port not in named.values():
                            bad(f"{wname}: {probe} port {port} is not a container port")
        ann = pod["metadata"].get("annotations", {})
        if ann.get("prometheus.io/scrape") == "true":
            if int(ann.get("prometheus.io/port", 0)) not in ports:
                bad(f"{wname}: prometheus.io/port is not a container port")

    # Every module and part must run somewhere in a mesh (a module whose built-in part is
    # switched off in its Deployment, e.g. EWPM_QUIZ__RELAY_ENABLED=false, relies on it).
    for target in sorted(serve_names - served):
        bad(f"serve {target} (src/lib.rs) runs in no Deployment")

    pods = {f"{kind}/{n}": d for kind in ("Deployment", "StatefulSet", "Job")
            for n, d in by_kind.get(kind, {}).items()}
    for sname, svc in services.items():
        sel = svc["spec"].get("selector", {})
        targets = [
            d for d in pods.values()
            if sel and all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                           for k, v in sel.items())
        ]
        if not targets:
            bad(f"Service {sname}: selects no Deployment's pods")
            continue
        for p in svc["spec"]["ports"]:
            tp = p.get("targetPort", p["port"])
            for d in targets:
                names = {cp.get("name") for c in d["spec"]["template"]["spec"]["containers"]
                         for cp in c.get("ports", [])}
                nums = {cp["containerPort"] for c in d["spec"]["template"]["spec"]["containers"]
                        for cp in c.get("ports", [])}
                if tp not in names and tp not in nums:
                    bad(f"Service {sname}: targetPort {tp} missing in {d['metadata']['name']}")

    for cm in configmaps.values():
        for key, value in cm.get("data", {}).items():
            if key.startswith("EWPM_SERVICES__"):
                u = urlparse(value)
                svc = services.get(u.hostname)
                if not svc or u.port not in {p["port"] for p in svc["spec"]["ports"]}:
                    bad(f"ConfigMap {key}={value}: no such Service port")

    for kind in ("HorizontalPodAutoscaler",):
        for name, h in by_kind.get(kind, {}).items():
            ref = h["spec"]["scaleTargetRef"]
            if ref["kind"] != "Deployment" or ref["name"] not in deployments:
                bad(f"HPA {name}: target {ref['kind']}/{ref['name']} missing")
            elif overlay not in ("dev", "local") and "replicas" in deployments[ref["name"]]["spec"]:
                bad(f"Deployment {ref['name']}: sets replicas although an HPA owns it")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        sel = pdb["spec"]["selector"]["matchLabels"]
        if not any(all(d["spec"]["template"]["metadata"]["labels"].get(k) == v
                       for k, v in sel.items()) for d in deployments.values()):
            bad(f"PDB {name}: selects no Deployment's pods")
    for name in deployments:
        if name not in by_kind.get("PodDisruptionBudget", {}):
            bad(f"Deployment {name}: no PodDisruptionBudget")
        if name not in hpas and name != "scan-projector":
            bad(f"Deployment {name}: no HorizontalPodAutoscaler")

    for name, d in deployments.items():
        spreads = d["spec"]["template"]["spec"].get("topologySpreadConstraints", [])
        labels = d["spec"]["template"]["metadata"]["labels"]
        if not any(selects(c.get("labelSelector"), labels) for c in spreads):
            bad(f"Deployment {name}: no topologySpreadConstraints selecting its own pods")

    accounts = by_kind.get("ServiceAccount", {})
    for wname, w in workloads.items():
        spec = w["spec"]["template"]["spec"]
        account = spec.get("serviceAccountName")
        if not account or account not in accounts:
            bad(f"{wname}: serviceAccountName {account!r} is no ServiceAccount here")
        elif accounts[account].get("automountServiceAccountToken") is not False:
            bad(f"ServiceAccount {account}: automountServiceAccountToken is not false")
        if spec.get("automountServiceAccountToken") is not False:
            bad(f"{wname}: automountServiceAccountToken is not false")

    check_network_policies(overlay, by_kind, pods, deployments, bad)

    for name, ing in by_kind.get("Ingress", {}).items():
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                backend = path["backend"]["service"]
                svc = services.get(backend["name"])
                port = backend["port"].get("name", backend["port"].get("number"))
                if not svc or port not in {p.get("name") for p in svc["spec"]["ports"]} | {
                        p["port"] for p in svc["spec"]["ports"]}:
                    bad(f"Ingress {name}: backend {backend['name']}:{port} is no Service port")


def selects(selector, labels):
    selector = selector or {}
    if not all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items()):
        return False
    for e in selector.get("matchExpressions", []):
        present, values = e["key"] in labels, e.get("values", [])
        ok = {"In": present and labels[e["key"]] in values,
              "NotIn": not present or labels[e["key"]] not in values,
              "Exists": present, "DoesNotExist": not present}[e["operator"]]
        if not ok:
            return False
    return True


def check_network_policies(overlay, by_kind, pods, deployments, bad):
    """See the module doc: NetworkPolicy selectors, ports, and both ends of every path."""
    policies = by_kind.get("NetworkPolicy", {})
    labels = {n: d["spec"]["template"]["metadata"]["labels"] for n, d in pods.items()}

    def ports_of(pod):
        named, nums = {}, set()
        for c in pods[pod]["spec"]["template"]["spec"]["containers"]:
            for p in c.get("ports", []):
                named[p.get("name")] = p["containerPort"]
                nums.add(p["containerPort"])
        return named, nums

    def resolve(pod, port):
        named, nums = ports_of(pod)
        number = named.get(port, port)
        return number if number in nums else None

    def selected(selector):
        return [n for n in pods if selects(selector, labels[n])]

    if not any(p["spec"].get("podSelector") in ({}, None) and not p["spec"].get("ingress")
               and not p["spec"].get("egress")
               and set(p["spec"].get("policyTypes", [])) == {"Ingress", "Egress"}
               for p in policies.values()):
        bad("NetworkPolicy: no default deny (podSelector {}, Ingress and Egress, no rules)")
    # Paths as (from pod, to pod, port number): what egress allows and what ingress admits.
    egress, ingress = set(), set()
    for name, pol in policies.items():
        spec = pol["spec"]
        sel = spec.get("podSelector") or {}
        applies = selected(sel)
        if (sel.get("matchLabels") or sel.get("matchExpressions")) and not applies:
            bad(f"NetworkPolicy {name}: podSelector selects no pod")
        for rule in spec.get("ingress", []) or []:
            sources = [f for f in rule.get("from", []) if "podSelector" in f
                       and "namespaceSelector" not in f]
            for f in sources:
                if not selected(f["podSelector"]):
                    bad(f"NetworkPolicy {name}: ingress from {f['podSelector']} selects no pod")
            for port in rule.get("ports", []):
                for pod in applies:
                    number = resolve(pod, port["port"])
                    if number is None:
                        bad(f"NetworkPolicy {name}: ingress port {port['port']} is no container "
                            f"port of {pod}")
                        continue
                    for f in sources:
                        for src in selected(f["podSelector"]):
                            ingress.add((src, pod, number))
        for rule in spec.get("egress", []) or []:
            if not rule.get("to"):
                # Any destination on these ports: every pod here with such a port included.
                for port in rule.get("ports", []):
                    for dst in pods:
                        number = resolve(dst, port["port"])
                        if number is not None:
                            for src in applies:
                                egress.add((src, dst, number))
            targets = [t for t in rule.get("to", []) if "podSelector" in t
                       and "namespaceSelector" not in t]
            for t in targets:
                dests = selected(t["podSelector"])
                if not dests:
                    bad(f"NetworkPolicy {name}: egress to {t['podSelector']} selects no pod")
                for port in rule.get("ports", []):
                    for dst in dests:
                        number = resolve(dst, port["port"])
                        if number is None:
                            bad(f"NetworkPolicy {name}: egress port {port['port']} is no "
                                f"container port of {dst}")
                            continue
                        for src in applies:
                            egress.add((src, dst, number))
    for src, dst, port in sorted(egress - ingress):
        bad(f"NetworkPolicy: {src} may send to {dst}:{port}, which does not admit it")
    for src, dst, port in sorted(ingress - egress):
        bad(f"NetworkPolicy: {dst}:{port} admits {src}, which may not send to it")
    for name, d in [*deployments.items(), *by_kind.get("Job", {}).items()]:
        own = [p for p in policies.values()
               if (p["spec"].get("podSelector") or {}).get("matchLabels", {}).get(
                   "app.kubernetes.io/name") == d["spec"]["template"]["metadata"]["labels"].get(
                   "app.kubernetes.io/name")]
        if not own:
            bad(f"{d['kind']} {name}: no NetworkPolicy of its own")


def main():
    allowed = settings_names()
    if not allowed:
        sys.exit(f"no settings parsed from {SETTINGS_RS}")
    secret = yaml.safe_load((K8S / "base/secret.example.yaml").read_text())
    secret_keys = set(secret["stringData"])
    targets = serve_targets()
    problems = [f"serve {t}: no NEEDS entry in k8s/check.py" for t in sorted(targets - set(NEEDS))]
    for overlay in OVERLAYS:
        docs = render(overlay)
        validate_schemas(overlay, docs, problems)
        check(overlay, docs, allowed, secret_keys, targets, problems)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    how = "kubectl kustomize" if shutil.which("kubectl") else "the fallback renderer"
    print(f"k8s: {', '.join(OVERLAYS)} rendered ({how}), valid for Kubernetes "
          f"{', '.join(VERSIONS)} (strict), cross-references OK ({len(allowed)} known settings)")


if __name__ == "__main__":
    main()
