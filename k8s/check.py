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
  (outside dev).

Usage: python3 k8s/check.py  (from the repository root; needs kubectl and PyYAML).
Exits non-zero with one line per problem.
"""

import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import yaml

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "k8s"
SETTINGS_RS = ROOT / "services/kit/src/settings.rs"
REGISTRY_RS = ROOT / "src/lib.rs"

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
    out = subprocess.run(
        ["kubectl", "kustomize", str(K8S / "overlays" / overlay)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def check(overlay, docs, allowed, secret_keys, serve_names, problems):
    def bad(msg):
        problems.append(f"{overlay}: {msg}")

    by_kind = {}
    for d in docs:
        by_kind.setdefault(d["kind"], {})[d["metadata"]["name"]] = d
    configmaps = by_kind.get("ConfigMap", {})
    deployments = by_kind.get("Deployment", {})
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
                    if ref["name"] != "ewpm-secrets" or ref["key"] not in secret_keys:
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

    for sname, svc in services.items():
        sel = svc["spec"].get("selector", {})
        targets = [
            d for d in deployments.values()
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
            elif overlay != "dev" and "replicas" in deployments[ref["name"]]["spec"]:
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


def main():
    allowed = settings_names()
    if not allowed:
        sys.exit(f"no settings parsed from {SETTINGS_RS}")
    secret = yaml.safe_load((K8S / "base/secret.example.yaml").read_text())
    secret_keys = set(secret["stringData"])
    targets = serve_targets()
    problems = [f"serve {t}: no NEEDS entry in k8s/check.py" for t in sorted(targets - set(NEEDS))]
    for overlay in ("dev", "prod"):
        check(overlay, render(overlay), allowed, secret_keys, targets, problems)
    for p in problems:
        print(p)
    if problems:
        sys.exit(1)
    print(f"k8s cross-reference check: dev and prod OK ({len(allowed)} known settings)")


if __name__ == "__main__":
    main()
