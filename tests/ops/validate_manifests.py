#!/usr/bin/env python3
"""Validate rendered Kubernetes manifests offline.

Usage: validate_manifests.py [--dump-configs DIR] RENDERED.yaml...

- Built-in kinds: strict validation against the Kubernetes OpenAPI (JSON) schemas bundled with the
  `kubernetes-validate` package, for several Kubernetes versions (no network).
- prometheus-operator kinds (ServiceMonitor, PrometheusRule), whose schemas are not bundled: structural checks
  of the fields herald uses, and the PrometheusRule's groups must equal alerts/herald.rules.yaml.
- Cross-references inside one rendered file: ConfigMaps, ServiceAccounts, PriorityClasses, named ports of
  probes, Service, ServiceMonitor, NetworkPolicy and PodDisruptionBudget selectors, RoleBinding subjects, the
  objects a Role names in resourceNames (and the Lease and checkpoint ConfigMap names herald's configuration
  implies); herald's containers keep the hardening, probe timeouts, tolerations and token handling the
  deployment promises (deploy/README.md); every pod meets the "restricted" Pod Security Standard.
- --dump-configs DIR writes every ConfigMap key ending in .yaml to DIR/<file stem>-<configmap>-<key>, so the
  caller can run `herald config check` on exactly what the cluster would mount.

Exit status 0 when everything holds; otherwise 1 with one line per problem.
"""
import argparse
import pathlib
import re
import sys

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
VERSIONS = ["1.30.0", "1.33.0", kubernetes_validate.latest_version()]
WORKLOADS = {"DaemonSet", "Deployment", "StatefulSet", "Job"}
CRD_KINDS = {"ServiceMonitor", "PrometheusRule"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
# Volume types the "restricted" Pod Security Standard admits (herald's namespace enforces it).
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
# Built-in PriorityClasses, which are not rendered.
SYSTEM_PRIORITY_CLASSES = {"system-node-critical", "system-cluster-critical"}

problems = []


def problem(source, doc, message):
    meta = doc.get("metadata", {}) if isinstance(doc, dict) else {}
    problems.append(f"{source}: {doc.get('kind', '?')}/{meta.get('name', '?')}: {message}")


def pod_spec(doc):
    if doc["kind"] == "Pod":
        return doc["spec"], doc["metadata"].get("labels", {})
    template = doc["spec"]["template"]
    return template["spec"], template["metadata"].get("labels", {})


def check_builtin(source, doc):
    for version in VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError:
            problem(source, doc, f"no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version}")
        except kubernetes_validate.ValidationError as e:
            path = "/".join(str(p) for p in e.path)
            problem(source, doc, f"Kubernetes {version}: {path}: {e.message}")


def check_str_map(source, doc, value, where):
    if value is None:
        return
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        problem(source, doc, f"{where} must map strings to strings")


def check_service_monitor(source, doc, by_kind):
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        problem(source, doc, "apiVersion must be monitoring.coreos.com/v1")
    spec = doc.get("spec", {})
    unknown = set(spec) - {"selector", "endpoints", "namespaceSelector", "jobLabel", "targetLabels", "podTargetLabels"}
    if unknown:
        problem(source, doc, f"unknown spec fields {sorted(unknown)}")
    match = spec.get("selector", {}).get("matchLabels", {})
    check_str_map(source, doc, match, "spec.selector.matchLabels")
    ns = doc["metadata"].get("namespace")
    services = [
        s for s in by_kind.get("Service", [])
        if s["metadata"].get("namespace") == ns and match.items() <= s["metadata"].get("labels", {}).items()
    ]
    if not match or not services:
        problem(source, doc, f"selector {match} matches no Service in namespace {ns}")
    endpoints = spec.get("endpoints")
    if not isinstance(endpoints, list) or not endpoints:
        problem(source, doc, "spec.endpoints must be a non-empty list")
        return
    for i, ep in enumerate(endpoints):
        unknown = set(ep) - {"port", "path", "interval", "scrapeTimeout", "scheme", "relabelings",
                             "metricRelabelings", "honorLabels"}
        if unknown:
            problem(source, doc, f"endpoints[{i}]: unknown fields {sorted(unknown)}")
        for key in ("interval", "scrapeTimeout"):
            if key in ep and not DURATION.match(str(ep[key])):
                problem(source, doc, f"endpoints[{i}].{key}: not a duration: {ep[key]!r}")
        for svc in services:
            names = {p.get("name") for p in svc["spec"].get("ports", [])}
            if ep.get("port") not in names:
                problem(source, doc, f"endpoints[{i}].port {ep.get('port')!r} is not a port of Service "
                                     f"{svc['metadata']['name']} ({sorted(n for n in names if n)})")
        for j, r in enumerate(ep.get("relabelings", [])):
            if not isinstance(r.get("sourceLabels", []), list) or not isinstance(r.get("targetLabel", ""), str):
                problem(source, doc, f"endpoints[{i}].relabelings[{j}] is malformed")


def check_prometheus_rule(source, doc):
    if doc.get("apiVersion") != "monitoring.coreos.com/v1":
        problem(source, doc, "apiVersion must be monitoring.coreos.com/v1")
    groups = doc.get("spec", {}).get("groups")
    if not isinstance(groups, list) or not groups:
        problem(source, doc, "spec.groups must be a non-empty list")
        return
    for g in groups:
        if not isinstance(g.get("name"), str):
            problem(source, doc, "every group needs a name")
        for r in g.get("rules", []):
            if ("alert" in r) == ("record" in r):
                problem(source, doc, f"rule needs exactly one of alert/record: {r}")
            if not isinstance(r.get("expr"), str):
                problem(source, doc, f"rule {r.get('alert') or r.get('record')}: expr must be a string")
            if "for" in r and not DURATION.match(str(r["for"])):
                problem(source, doc, f"rule {r.get('alert')}: for: not a duration: {r['for']!r}")
            check_str_map(source, doc, r.get("labels"), f"rule {r.get('alert')} labels")
            check_str_map(source, doc, r.get("annotations"), f"rule {r.get('alert')} annotations")
    shipped = yaml.safe_load((ROOT / "alerts" / "herald.rules.yaml").read_text())["groups"]
    if groups != shipped:
        problem(source, doc, "spec.groups differ from alerts/herald.rules.yaml; regenerate with "
                             "`python3 tests/ops/prometheusrule.py > deploy/base/prometheusrule.yaml`")


def check_pods(source, doc, by_kind):
    spec, labels = pod_spec(doc)
    ns = doc["metadata"].get("namespace")
    names = lambda kind: {d["metadata"]["name"] for d in by_kind.get(kind, []) if d["metadata"].get("namespace") == ns}
    sa = spec.get("serviceAccountName")
    if sa and sa not in names("ServiceAccount"):
        problem(source, doc, f"serviceAccountName {sa} is not in the rendered manifests")
    for vol in spec.get("volumes", []):
        cm = vol.get("configMap", {}).get("name")
        if cm and cm not in names("ConfigMap"):
            problem(source, doc, f"volume {vol['name']}: ConfigMap {cm} is not in the rendered manifests")
    pod_sc = spec.get("securityContext", {})
    for c in spec.get("containers", []):
        ports = {p.get("name") for p in c.get("ports", [])}
        for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
            port = c.get(probe, {}).get("httpGet", {}).get("port")
            if isinstance(port, str) and port not in ports:
                problem(source, doc, f"{c['name']}.{probe}: port {port} is not a named port")
        if c.get("name") != "herald":
            continue
        # herald's container: the hardening and probes the deployment promises.
        sc = c.get("securityContext", {})
        want = {
            "runAsNonRoot": sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is True,
            "readOnlyRootFilesystem": sc.get("readOnlyRootFilesystem") is True,
            "allowPrivilegeEscalation: false": sc.get("allowPrivilegeEscalation") is False,
            "capabilities drop ALL": sc.get("capabilities", {}).get("drop") == ["ALL"],
            "seccomp RuntimeDefault": (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
            == "RuntimeDefault",
            "liveness /healthz": c.get("livenessProbe", {}).get("httpGet", {}).get("path") == "/healthz",
            "readiness /readyz": c.get("readinessProbe", {}).get("httpGet", {}).get("path") == "/readyz",
            "probe timeouts of 2 s or more (the 1 s default restarts agents on a busy node)": all(
                c.get(probe, {}).get("timeoutSeconds", 1) >= 2 for probe in ("livenessProbe", "readinessProbe")
            ),
            "memory request and limit": {"requests", "limits"} <= set(c.get("resources", {}))
            and "memory" in c["resources"]["limits"],
            "POD_NAMESPACE from the downward API": any(
                e.get("name") == "POD_NAMESPACE"
                and e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace"
                for e in c.get("env", [])
            ),
        }
        for what, ok in want.items():
            if not ok:
                problem(source, doc, f"container {c['name']}: missing {what}")
    if doc["kind"] == "DaemonSet":
        tolerations = spec.get("tolerations", [])
        for effect in ("NoSchedule", "PreferNoSchedule"):
            if {"operator": "Exists", "effect": effect} not in tolerations:
                problem(source, doc, f"a DaemonSet must tolerate every {effect} taint to run on every node")
        for t in tolerations:
            if t.get("operator") == "Exists" and "key" not in t and t.get("effect", "NoExecute") == "NoExecute":
                problem(source, doc, f"toleration {t} keeps the agent on a node its administrator empties (NoExecute)")
        pc = spec.get("priorityClassName")
        if not pc:
            problem(source, doc, "a node agent needs a priorityClassName, or full nodes never run it")
        elif pc not in SYSTEM_PRIORITY_CLASSES and pc not in {d["metadata"]["name"] for d in by_kind.get("PriorityClass", [])}:
            problem(source, doc, f"priorityClassName {pc} is not in the rendered manifests")
    check_token(source, doc, spec)
    check_restricted(source, doc, spec)
    return labels


def check_restricted(source, doc, spec):
    """The "restricted" Pod Security Standard, for every container of the pod (not only herald's): a namespace
    that enforces it (herald's does) refuses the pod otherwise, which only a real cluster would show."""
    pod_sc = spec.get("securityContext", {})
    for key in ("hostNetwork", "hostPID", "hostIPC"):
        if spec.get(key):
            problem(source, doc, f"{key} is not allowed by the restricted Pod Security Standard")
    for v in spec.get("volumes", []):
        kinds = set(v) - {"name"}
        if not kinds <= RESTRICTED_VOLUMES:
            problem(source, doc, f"volume {v['name']}: type {sorted(kinds)} is not allowed by the restricted standard")
    for c in spec.get("initContainers", []) + spec.get("containers", []):
        sc = c.get("securityContext", {})
        where = f"container {c['name']}"
        if sc.get("privileged"):
            problem(source, doc, f"{where}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            problem(source, doc, f"{where}: allowPrivilegeEscalation must be false")
        if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
            problem(source, doc, f"{where}: runAsNonRoot must be true")
        if sc.get("runAsUser", pod_sc.get("runAsUser")) == 0:
            problem(source, doc, f"{where}: runAsUser 0")
        seccomp = (sc.get("seccompProfile") or pod_sc.get("seccompProfile") or {}).get("type")
        if seccomp not in ("RuntimeDefault", "Localhost"):
            problem(source, doc, f"{where}: seccompProfile must be RuntimeDefault or Localhost")
        caps = sc.get("capabilities", {})
        if "ALL" not in caps.get("drop", []) or set(caps.get("add", [])) - {"NET_BIND_SERVICE"}:
            problem(source, doc, f"{where}: capabilities must drop ALL and add at most NET_BIND_SERVICE")
        if any(p.get("hostPort") for p in c.get("ports", [])):
            problem(source, doc, f"{where}: hostPort")


def check_token(source, doc, spec):
    """A pod with an application next to herald mounts the API token into herald's container only."""
    containers = spec.get("containers", [])
    if len(containers) < 2:
        return
    if spec.get("automountServiceAccountToken") is not False:
        problem(source, doc, "a pod shared with an application must not mount the token into every container "
                             "(automountServiceAccountToken: false)")
    projected = {
        v["name"] for v in spec.get("volumes", [])
        if any("serviceAccountToken" in src for src in v.get("projected", {}).get("sources", []))
    }
    for c in containers:
        mounts = {m["name"] for m in c.get("volumeMounts", []) if m.get("mountPath") == TOKEN_PATH}
        if c["name"] == "herald" and not mounts & projected:
            problem(source, doc, f"container herald mounts no projected token at {TOKEN_PATH}")
        if c["name"] != "herald" and any(m["name"] in projected for m in c.get("volumeMounts", [])):
            problem(source, doc, f"container {c['name']} mounts herald's API token")


def check_selects_pods(source, doc, selector, pod_labels):
    if not selector or not any(selector.items() <= labels.items() for labels in pod_labels):
        problem(source, doc, f"selector {selector} matches no pod template")


def check_network_policy(source, doc, pods):
    spec = doc["spec"]
    selector = spec.get("podSelector", {}).get("matchLabels", {})
    selected = [(d, labels) for d, labels in pods if selector.items() <= labels.items()]
    if not selector or not selected:
        problem(source, doc, f"podSelector {selector} matches no pod template")
    for rule in spec.get("ingress", []):
        if not rule.get("from"):
            problem(source, doc, "an ingress rule without `from` lets every client in")
        for port in rule.get("ports", []):
            for d, _ in selected:
                pod, _ = pod_spec(d)
                names = {p.get("name") for c in pod["containers"] for p in c.get("ports", [])}
                numbers = {p.get("containerPort") for c in pod["containers"] for p in c.get("ports", [])}
                if port.get("port") not in names | numbers:
                    problem(source, doc, f"port {port.get('port')!r} is not a port of {d['kind']}/{d['metadata']['name']}")


def check_named_objects(source, doc, by_kind):
    """Every object a Role names in resourceNames is rendered in the Role's namespace."""
    ns = doc["metadata"].get("namespace")
    kinds = {"leases": "Lease", "configmaps": "ConfigMap"}
    for rule in doc.get("rules", []):
        for res in rule.get("resources", []):
            for name in rule.get("resourceNames", []):
                kind = kinds.get(res)
                found = kind and any(
                    d["metadata"]["name"] == name and d["metadata"].get("namespace") == ns for d in by_kind.get(kind, [])
                )
                if not found:
                    problem(source, doc, f"resourceNames names {res}/{name}, which is not rendered in namespace {ns}")


def check_leader_objects(source, by_kind):
    """With a Lease rendered, herald's configuration names it and its checkpoint ConfigMap is rendered too."""
    leases = by_kind.get("Lease", [])
    if not leases:
        return
    configs = [
        yaml.safe_load(text) or {}
        for cm in by_kind.get("ConfigMap", [])
        for key, text in cm.get("data", {}).items()
        if key == "herald.yaml"
    ]
    names = {(c.get("leader_election") or {}).get("lease_name", "herald-leader") for c in configs}
    maps = {d["metadata"]["name"] for d in by_kind.get("ConfigMap", [])}
    for lease in leases:
        name = lease["metadata"]["name"]
        if names != {name}:
            problem(source, lease, f"herald's configuration names the Lease {sorted(names)}, not {name}")
        if f"{name}-state" not in maps:
            problem(source, lease, f"the leader's checkpoint ConfigMap {name}-state is not rendered")


def check_services(source, doc, pod_labels):
    check_selects_pods(source, doc, doc["spec"].get("selector", {}), pod_labels)


def check_bindings(source, doc, by_kind):
    for s in doc.get("subjects", []):
        if s.get("kind") == "ServiceAccount":
            found = any(
                d["metadata"]["name"] == s.get("name") and d["metadata"].get("namespace") == s.get("namespace")
                for d in by_kind.get("ServiceAccount", [])
            )
            if not found:
                problem(source, doc, f"subject ServiceAccount {s.get('namespace')}/{s.get('name')} is not rendered")
    ref = doc["roleRef"]
    if not any(d["metadata"]["name"] == ref["name"] for d in by_kind.get(ref["kind"], [])):
        problem(source, doc, f"roleRef {ref['kind']}/{ref['name']} is not rendered")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dump-configs", type=pathlib.Path)
    parser.add_argument("files", nargs="+", type=pathlib.Path)
    args = parser.parse_args()
    total = 0
    for path in args.files:
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        total += len(docs)
        source = path.name
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d.get("kind"), []).append(d)
        pods = []
        for d in docs:
            kind = d.get("kind")
            if kind in CRD_KINDS:
                pass
            else:
                check_builtin(source, d)
            if kind == "ServiceMonitor":
                check_service_monitor(source, d, by_kind)
            elif kind == "PrometheusRule":
                check_prometheus_rule(source, d)
            elif kind in WORKLOADS or kind == "Pod":
                pods.append((d, check_pods(source, d, by_kind)))
            elif kind in ("RoleBinding", "ClusterRoleBinding"):
                check_bindings(source, d, by_kind)
            elif kind == "Role":
                check_named_objects(source, d, by_kind)
            elif kind == "ConfigMap" and args.dump_configs:
                for key, text in d.get("data", {}).items():
                    if key.endswith(".yaml"):
                        out = args.dump_configs / f"{path.stem}-{d['metadata']['name']}-{key}"
                        out.write_text(text)
        pod_labels = [labels for _, labels in pods]
        for d in by_kind.get("Service", []):
            check_services(source, d, pod_labels)
        for d in by_kind.get("PodDisruptionBudget", []):
            check_selects_pods(source, d, d["spec"].get("selector", {}).get("matchLabels", {}), pod_labels)
        for d in by_kind.get("NetworkPolicy", []):
            check_network_policy(source, d, pods)
        check_leader_objects(source, by_kind)
    for p in problems:
        print(p)
    if problems:
        return 1
    print(f"ok: {total} documents in {len(args.files)} files, Kubernetes {', '.join(VERSIONS)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
