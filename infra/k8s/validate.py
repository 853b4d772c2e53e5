#!/usr/bin/env python3
"""Render every kustomize overlay under infra/k8s/overlays and validate what comes out.

- Built-in kinds: kubernetes-validate's bundled (offline) OpenAPI schemas, strict mode (unknown
  fields are errors), for every Kubernetes version in --k8s-versions.
- KEDA ScaledObject/TriggerAuthentication and Prometheus Operator ServiceMonitor/PrometheusRule:
  the cloudcoil models generated from those projects' CRD schemas, with unknown fields made
  errors here.
- ExternalSecret: schemas/externalsecret-v1beta1.json, a structural schema written for the fields
  we use (no CRD schema package is available offline).
- Then cross-object checks kustomize and schemas cannot do (see check_* below).

Rendering uses `kubectl kustomize` when present; otherwise (or with --renderer python) the small
renderer in this file, which covers only the kustomize features these overlays use. With both
available, --cross-check renders each overlay both ways and requires the same objects.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import inspect
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PersistentVolume", "StorageClass", "IngressClass", "PriorityClass", "ClusterSecretStore",
}
KNOWN_METRICS = {
    "airlock_held_calls", "airlock_tool_calls_total", "airlock_approval_wait_seconds",
    "airlock_audit_dropped_total", "airlock_signal_lost_total", "airlock_notifier_jobs_total",
    "airlock_notifier_dead_letters_total", "airlock_notifier_lag_seconds",
    "airlock_webhook_requests_total",
}
REDIS_STREAMS_KEYS = {
    "address", "addressFromEnv", "host", "hostFromEnv", "port", "portFromEnv", "username",
    "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
    "streamLength", "lagCount", "activationLagCount", "activationStreamLength",
    "activationPendingEntriesCount", "enableTLS", "unsafeSsl", "databaseIndex",
}


class Invalid(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# Rendering


def kubectl_render(overlay: Path) -> list[dict]:
    out = subprocess.run(["kubectl", "kustomize", str(overlay)], check=False,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise Invalid(f"kubectl kustomize {overlay}: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def _load_kustomization(d: Path) -> dict:
    for name in ("kustomization.yaml", "kustomization.yml", "Kustomization"):
        if (d / name).is_file():
            return yaml.safe_load((d / name).read_text()) or {}
    raise Invalid(f"{d}: no kustomization file")


def _cm_hash(cm: dict) -> str:
    # Not kustomize's exact hash, but a content hash all the same.
    digest = hashlib.sha256(json.dumps(cm.get("data", {}), sort_keys=True).encode()).hexdigest()
    alphabet = "bcdfghkmt256789"
    return "".join(alphabet[int(c, 16) % len(alphabet)] for c in digest[:10])


def _pod_spec(obj: dict) -> dict | None:
    spec = obj.get("spec") or {}
    if obj.get("kind") == "CronJob":
        spec = ((spec.get("jobTemplate") or {}).get("spec")) or {}
    return ((spec.get("template") or {}).get("spec")) if "template" in spec else None


def _containers(pod: dict) -> list[dict]:
    return list(pod.get("containers") or []) + list(pod.get("initContainers") or [])


def _pointer(path: str) -> list[str]:
    return [p.replace("~1", "/").replace("~0", "~") for p in path.lstrip("/").split("/")]


def _json6902(doc: dict, ops: list[dict]) -> None:
    for op in ops:
        parts = _pointer(op["path"])
        parent = doc
        for p in parts[:-1]:
            parent = parent[int(p)] if isinstance(parent, list) else parent[p]
        last = parts[-1]
        kind = op["op"]
        if isinstance(parent, list):
            idx = len(parent) if last == "-" else int(last)
            if kind == "add":
                parent.insert(idx, copy.deepcopy(op["value"]))
            elif kind == "replace":
                parent[idx] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[idx]
            else:
                raise Invalid(f"python renderer: unsupported patch op {kind}")
        else:
            if kind in ("replace", "remove") and last not in parent:
                raise Invalid(f"patch {kind} {op['path']}: no such field")
            if kind in ("add", "replace"):
                parent[last] = copy.deepcopy(op["value"])
            elif kind == "remove":
                del parent[last]
            else:
                raise Invalid(f"python renderer: unsupported patch op {kind}")


def _matches(obj: dict, target: dict) -> bool:
    group, _, version = obj.get("apiVersion", "").rpartition("/")
    checks = {"group": group, "version": version, "kind": obj.get("kind"),
              "name": obj["metadata"].get("name"), "namespace": obj["metadata"].get("namespace")}
    return all(checks[k] == v for k, v in target.items() if k in checks)


def python_render(d: Path, component: bool = False, acc: list[dict] | None = None,
                  top: bool = True) -> list[dict]:
    k = _load_kustomization(d)
    supported = {"apiVersion", "kind", "resources", "components", "namespace", "images", "labels",
                 "patches", "replicas", "configMapGenerator", "generatorOptions"}
    extra = set(k) - supported
    if extra:
        raise Invalid(f"{d}: python renderer does not support {sorted(extra)}")
    objs: list[dict] = acc if acc is not None else []
    renames: dict[str, str] = {}
    for r in k.get("resources", []):
        p = (d / r).resolve()
        if p.is_dir():
            sub = python_render(p, top=False)
            objs.extend(sub)
        else:
            objs.extend(x for x in yaml.safe_load_all(p.read_text()) if x)
    gen_labels = (k.get("generatorOptions") or {}).get("labels") or {}
    for g in k.get("configMapGenerator", []):
        data: dict[str, str] = {}
        for lit in g.get("literals", []):
            key, _, value = lit.partition("=")
            data[key] = value
        for f in g.get("files", []):
            key, _, path = f.rpartition("=") if "=" in f else ("", "", f)
            data[key or Path(path).name] = (d / path).read_text()
        behavior = g.get("behavior", "create")
        existing = [o for o in objs if o["kind"] == "ConfigMap"
                    and o["metadata"].get("annotations", {}).get("x-gen-name") == g["name"]]
        if behavior == "create":
            cm = {"apiVersion": "v1", "kind": "ConfigMap",
                  "metadata": {"name": g["name"], "labels": dict(gen_labels),
                               "annotations": {"x-gen-name": g["name"]}}, "data": data}
            if not cm["metadata"]["labels"]:
                del cm["metadata"]["labels"]
            objs.append(cm)
        else:
            if len(existing) != 1:
                raise Invalid(f"{d}: configMapGenerator {behavior} of unknown {g['name']}")
            if behavior == "merge":
                existing[0]["data"].update(data)
            else:
                existing[0]["data"] = data
    for c in k.get("components", []):
        python_render((d / c).resolve(), component=True, acc=objs, top=False)
    for lab in k.get("labels", []):
        if lab.get("includeSelectors") or lab.get("includeTemplates"):
            raise Invalid(f"{d}: python renderer supports labels on metadata only")
        for o in objs:
            o["metadata"].setdefault("labels", {}).update(lab["pairs"])
    if "namespace" in k:
        for o in objs:
            if o["kind"] not in CLUSTER_SCOPED:
                o["metadata"]["namespace"] = k["namespace"]
    for img in k.get("images", []):
        for o in objs:
            pod = _pod_spec(o)
            for c in _containers(pod or {}):
                name = re.split(r"[@:](?!.*/)", c["image"], maxsplit=1)[0]
                if name != img["name"]:
                    continue
                tag = re.sub(r"^[^@]*?(?=[@:][^/]*$)", "", c["image"]) if c["image"] != name else ""
                new = img.get("newName", name)
                if "digest" in img:
                    tag = "@" + img["digest"]
                elif "newTag" in img:
                    tag = ":" + str(img["newTag"])
                c["image"] = new + tag
    for rep in k.get("replicas", []):
        hits = [o for o in objs if o["metadata"]["name"] == rep["name"] and "replicas" in o.get("spec", {})]
        for o in hits:
            o["spec"]["replicas"] = rep["count"]
    for p in k.get("patches", []):
        if "path" in p:
            raise Invalid(f"{d}: python renderer supports inline patches only")
        ops = yaml.safe_load(p["patch"])
        if not isinstance(ops, list):
            raise Invalid(f"{d}: python renderer supports JSON6902 patches only")
        hits = [o for o in objs if _matches(o, p.get("target", {}))]
        if not hits:
            raise Invalid(f"{d}: patch target {p.get('target')} matched nothing")
        for o in hits:
            _json6902(o, ops)
    if not top:
        return objs
    # Top of this build: hash generated names and rewrite references to them.
    for o in objs:
        gen = o["metadata"].get("annotations", {}).pop("x-gen-name", None)
        if gen is not None:
            if not o["metadata"]["annotations"]:
                del o["metadata"]["annotations"]
            o["metadata"]["name"] = renames[gen] = f"{gen}-{_cm_hash(o)}"
    for o in objs:
        _rename_refs(o, renames)
    return objs


def _rename_refs(obj: dict, renames: dict[str, str]) -> None:
    pod = _pod_spec(obj)
    if not pod:
        return
    for v in pod.get("volumes") or []:
        if "configMap" in v and v["configMap"]["name"] in renames:
            v["configMap"]["name"] = renames[v["configMap"]["name"]]
    for c in _containers(pod):
        for ef in c.get("envFrom") or []:
            ref = ef.get("configMapRef")
            if ref and ref["name"] in renames:
                ref["name"] = renames[ref["name"]]
        for e in c.get("env") or []:
            ref = (e.get("valueFrom") or {}).get("configMapKeyRef")
            if ref and ref["name"] in renames:
                ref["name"] = renames[ref["name"]]


def _strip_hashes(objs: list[dict]) -> dict:
    text = yaml.safe_dump(sorted(objs, key=lambda o: (o["kind"], o["metadata"]["name"])), sort_keys=True)
    return yaml.safe_load(re.sub(r"(airlock-[a-z-]+-config|airlock-policy)-[a-z0-9]{10}\b", r"\1", text))


# ---------------------------------------------------------------------------------------------
# Validation


def _strict_models(mod) -> None:
    import pydantic
    classes = [c for _, c in inspect.getmembers(mod, inspect.isclass)
               if issubclass(c, pydantic.BaseModel) and c.__module__ == mod.__name__]
    for c in classes:
        c.model_config["extra"] = "forbid"
    # Parents embed their children's schemas: rebuild until every level has the strict ones.
    for _ in range(3):
        for c in classes:
            c.model_rebuild(force=True)


_CRD_MODELS: dict | None = None


def crd_models() -> dict:
    global _CRD_MODELS
    if _CRD_MODELS is None:
        import cloudcoil.models.keda.v1alpha1 as keda
        import cloudcoil.models.prometheus_operator.v1 as prom
        _strict_models(keda)
        _strict_models(prom)
        _CRD_MODELS = {
            ("keda.sh/v1alpha1", "ScaledObject"): keda.ScaledObject,
            ("keda.sh/v1alpha1", "TriggerAuthentication"): keda.TriggerAuthentication,
            ("monitoring.coreos.com/v1", "ServiceMonitor"): prom.ServiceMonitor,
            ("monitoring.coreos.com/v1", "PrometheusRule"): prom.PrometheusRule,
        }
    return _CRD_MODELS


def validate_schema(obj: dict, versions: list[str]) -> None:
    import jsonschema
    import kubernetes_validate
    key = (obj.get("apiVersion"), obj.get("kind"))
    if key[0] == "external-secrets.io/v1beta1" and key[1] == "ExternalSecret":
        schema = json.loads((HERE / "schemas" / "externalsecret-v1beta1.json").read_text())
        errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(obj), key=str)
        if errors:
            raise Invalid("; ".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors))
        return
    if key in crd_models():
        import pydantic
        # KEDA and the operator treat these as plain JSON: no str->int coercion allowed.
        try:
            crd_models()[key].model_validate(obj)
        except pydantic.ValidationError as e:
            raise Invalid(str(e)) from None
        return
    for v in versions:
        try:
            kubernetes_validate.validate(obj, v, strict=True)
        except kubernetes_validate.ValidationError as e:
            raise Invalid(f"k8s {v}: {e.message} at {'/'.join(map(str, e.path))}") from None
        except kubernetes_validate.utils.SchemaNotFoundError as e:
            raise Invalid(f"k8s {v}: no schema for {key}: {e}") from None


def _duration_s(text: str) -> float:
    total = 0.0
    for num, unit in re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        total += float(num) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]
    if not re.fullmatch(r"(\d+(?:\.\d+)?(ms|s|m|h))+", text):
        raise Invalid(f"cannot read duration {text!r}")
    return total


def check_cross_references(objs: list[dict]) -> list[str]:
    errs: list[str] = []
    by_kind: dict[str, dict[str, dict]] = {}
    for o in objs:
        by_kind.setdefault(o["kind"], {})[o["metadata"]["name"]] = o
    cms = by_kind.get("ConfigMap", {})
    deployments = by_kind.get("Deployment", {})
    ext = by_kind.get("ExternalSecret", {})
    ext_keys = {e["spec"]["target"]["name"]: {d["secretKey"] for d in e["spec"].get("data", [])}
                for e in ext.values()}

    def env_of(c: dict) -> dict[str, str | None]:
        env: dict[str, str | None] = {}
        for ef in c.get("envFrom") or []:
            if "configMapRef" in ef:
                env.update((cms.get(ef["configMapRef"]["name"]) or {}).get("data", {}))
        for e in c.get("env") or []:
            env[e["name"]] = e.get("value")
        return env

    for kind in ("Deployment", "Job"):
        for name, o in by_kind.get(kind, {}).items():
            pod = _pod_spec(o) or {}
            where = f"{kind}/{name}"
            for v in pod.get("volumes") or []:
                if "configMap" in v and v["configMap"]["name"] not in cms:
                    errs.append(f"{where}: volume uses missing ConfigMap {v['configMap']['name']}")
                if "secret" in v:
                    sec = v["secret"]["secretName"]
                    for item in v["secret"].get("items") or []:
                        if sec in ext_keys and item["key"] not in ext_keys[sec]:
                            errs.append(f"{where}: Secret {sec} key {item['key']} not provided by its ExternalSecret")
            for c in _containers(pod):
                for ef in c.get("envFrom") or []:
                    if "configMapRef" in ef and ef["configMapRef"]["name"] not in cms:
                        errs.append(f"{where}: envFrom missing ConfigMap {ef['configMapRef']['name']}")
                for e in c.get("env") or []:
                    ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                    if ref and ref["name"] in ext_keys and ref["key"] not in ext_keys[ref["name"]]:
                        errs.append(f"{where}: Secret {ref['name']} key {ref['key']} not provided by its ExternalSecret")
            labels = ((o["spec"].get("template") or {}).get("metadata") or {}).get("labels", {})
            sel = (o["spec"].get("selector") or {}).get("matchLabels")
            if kind == "Deployment" and sel and any(labels.get(k) != v for k, v in sel.items()):
                errs.append(f"{where}: selector does not match the pod template labels")

    # Services select pods; Ingress, HPA, PDB and ScaledObject point at what exists.
    pod_labels = [((d["spec"]["template"].get("metadata") or {}).get("labels") or {}) for d in deployments.values()]
    for name, s in by_kind.get("Service", {}).items():
        sel = s["spec"].get("selector") or {}
        if not any(all(pl.get(k) == v for k, v in sel.items()) for pl in pod_labels):
            errs.append(f"Service/{name}: selector matches no Deployment's pods")
    for name, ing in by_kind.get("Ingress", {}).items():
        for rule in ing["spec"].get("rules", []):
            for path in (rule.get("http") or {}).get("paths", []):
                svc = path["backend"]["service"]
                target = by_kind.get("Service", {}).get(svc["name"])
                ports = {p.get("name") for p in (target or {}).get("spec", {}).get("ports", [])}
                if target is None or svc["port"].get("name", None) not in ports | {None}:
                    errs.append(f"Ingress/{name}: backend {svc} does not exist")
    for kind in ("HorizontalPodAutoscaler", "ScaledObject"):
        for name, o in by_kind.get(kind, {}).items():
            ref = o["spec"]["scaleTargetRef"]
            if ref.get("kind", "Deployment") == "Deployment" and ref["name"] not in deployments:
                errs.append(f"{kind}/{name}: target Deployment {ref['name']} does not exist")
    for name, pdb in by_kind.get("PodDisruptionBudget", {}).items():
        sel = pdb["spec"]["selector"].get("matchLabels", {})
        if not any(all(pl.get(k) == v for k, v in sel.items()) for pl in pod_labels):
            errs.append(f"PodDisruptionBudget/{name}: selector matches no pods")
    if "HorizontalPodAutoscaler" in by_kind and "ScaledObject" in by_kind:
        hpa_targets = {h["spec"]["scaleTargetRef"]["name"] for h in by_kind["HorizontalPodAutoscaler"].values()}
        so_targets = {s["spec"]["scaleTargetRef"]["name"] for s in by_kind["ScaledObject"].values()}
        for clash in hpa_targets & so_targets:
            errs.append(f"Deployment/{clash} is scaled by both an HPA and a ScaledObject")

    # KEDA redis-streams triggers: metadata is a free string map in the CRD, so check it here.
    for name, so in by_kind.get("ScaledObject", {}).items():
        target = deployments.get(so["spec"]["scaleTargetRef"]["name"])
        env = {}
        for c in _containers(_pod_spec(target) or {}) if target else []:
            env.update(env_of(c))
        for i, t in enumerate(so["spec"]["triggers"]):
            where = f"ScaledObject/{name} trigger {i}"
            if t["type"] not in ("redis-streams", "redis-cluster-streams"):
                continue
            md = t.get("metadata") or {}
            unknown = set(md) - REDIS_STREAMS_KEYS
            if unknown:
                errs.append(f"{where}: unknown metadata {sorted(unknown)}")
            for k, v in md.items():
                if not isinstance(v, str):
                    errs.append(f"{where}: metadata {k} must be a string, got {v!r}")
            if not ({"address", "addressFromEnv", "host", "hostFromEnv"} & set(md)):
                errs.append(f"{where}: needs address/addressFromEnv/host")
            if "addressFromEnv" in md and md["addressFromEnv"] not in env:
                errs.append(f"{where}: addressFromEnv {md['addressFromEnv']} is not set on the target")
            modes = {"pendingEntriesCount", "streamLength", "lagCount"} & set(md)
            if len(modes) != 1:
                errs.append(f"{where}: set exactly one of pendingEntriesCount/streamLength/lagCount, got {sorted(modes)}")
            if "lagCount" in md and "activationLagCount" not in md:
                errs.append(f"{where}: lagCount needs activationLagCount")
            prefix = env.get("REDIS_KEY_PREFIX") or "airlock"
            if md.get("stream") != f"{{{prefix}}}:notify":
                errs.append(f"{where}: stream {md.get('stream')!r} is not {{{prefix}}}:notify")
            if md.get("consumerGroup") != "notifiers":
                errs.append(f"{where}: consumerGroup must be notifiers")
            auth = (t.get("authenticationRef") or {}).get("name")
            if auth and auth not in by_kind.get("TriggerAuthentication", {}):
                errs.append(f"{where}: TriggerAuthentication {auth} does not exist")
        if so["spec"].get("minReplicaCount", 0) == 0:
            lag = [t for t in so["spec"]["triggers"] if "lagCount" in (t.get("metadata") or {})]
            if not lag:
                errs.append(f"ScaledObject/{name}: minReplicaCount 0 without a lagCount trigger never wakes from zero")

    # Holds: gateway shutdown and proxies must outlast APPROVAL_TIMEOUT.
    gw = deployments.get("airlock-gateway")
    if gw:
        pod = _pod_spec(gw)
        c = pod["containers"][0]
        env = env_of(c)
        approval = _duration_s(env.get("APPROVAL_TIMEOUT") or "5m")
        grace = _duration_s(env.get("SHUTDOWN_GRACE") or "30s")
        pre = (((c.get("lifecycle") or {}).get("preStop") or {}).get("sleep") or {}).get("seconds", 0)
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps <= grace + pre:
            errs.append(f"gateway: terminationGracePeriodSeconds {tgps} must exceed preStop {pre} + SHUTDOWN_GRACE {grace}")
        if grace < approval:
            errs.append(f"gateway: SHUTDOWN_GRACE {grace}s is shorter than APPROVAL_TIMEOUT {approval}s; rollouts cut holds")
        if (c.get("readinessProbe") or {}).get("httpGet", {}).get("path") != "/readyz":
            errs.append("gateway: readinessProbe must GET /readyz")
        if (c.get("livenessProbe") or {}).get("httpGet", {}).get("path") != "/healthz":
            errs.append("gateway: livenessProbe must GET /healthz")
        for name, ing in by_kind.get("Ingress", {}).items():
            ann = ing["metadata"].get("annotations") or {}
            nginx = ann.get("nginx.ingress.kubernetes.io/proxy-read-timeout")
            alb = re.search(r"idle_timeout\.timeout_seconds=(\d+)", ann.get("alb.ingress.kubernetes.io/load-balancer-attributes", ""))
            if nginx is None or int(nginx) <= approval:
                errs.append(f"Ingress/{name}: nginx proxy-read-timeout must exceed APPROVAL_TIMEOUT {approval}s")
            if alb is None or int(alb.group(1)) <= approval:
                errs.append(f"Ingress/{name}: ALB idle_timeout must exceed APPROVAL_TIMEOUT {approval}s")

    # ServiceMonitor endpoints name ports that the selected Services have.
    for name, sm in by_kind.get("ServiceMonitor", {}).items():
        exprs = sm["spec"]["selector"].get("matchExpressions", [])
        wanted = {v for e in exprs if e["key"] == "app.kubernetes.io/name" for v in e["values"]}
        svcs = [s for s in by_kind.get("Service", {}).values()
                if (s["metadata"].get("labels") or {}).get("app.kubernetes.io/name") in wanted]
        if not svcs:
            errs.append(f"ServiceMonitor/{name}: selects no Service")
        for ep in sm["spec"]["endpoints"]:
            for s in svcs:
                if ep["port"] not in {p.get("name") for p in s["spec"]["ports"]}:
                    errs.append(f"ServiceMonitor/{name}: Service {s['metadata']['name']} has no port {ep['port']}")
    return errs


def check_rules(objs: list[dict]) -> list[str]:
    """Every PromQL expression parses and names only metrics the services export."""
    import promql_parser
    errs: list[str] = []
    for o in objs:
        if o["kind"] != "PrometheusRule":
            continue
        groups = o["spec"]["groups"]
        recorded = {r["record"] for g in groups for r in g["rules"] if "record" in r}
        for g in groups:
            for r in g["rules"]:
                label = r.get("alert") or r.get("record")
                try:
                    parsed = str(promql_parser.parse(r["expr"]))
                except ValueError as e:
                    errs.append(f"PrometheusRule {label}: {e}")
                    continue
                for metric in re.findall(r"([A-Za-z_:][A-Za-z0-9_:]*)\{", parsed):
                    base = re.sub(r"_(bucket|count|sum)$", "", metric)
                    if metric not in KNOWN_METRICS and base not in KNOWN_METRICS and metric not in recorded:
                        errs.append(f"PrometheusRule {label}: unknown metric {metric}")
                if "alert" in r and "for" in r:
                    _duration_s(r["for"])
    return errs


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("overlays", nargs="*", type=Path)
    ap.add_argument("--renderer", choices=["auto", "kubectl", "python"], default="auto")
    ap.add_argument("--cross-check", action="store_true",
                    help="also render with the python renderer and require the same objects")
    ap.add_argument("--k8s-versions", default="1.30.0,1.37.0")
    ap.add_argument("--dump", type=Path, help="write rendered manifests here")
    args = ap.parse_args()
    overlays = args.overlays or sorted(p for p in (HERE / "overlays").iterdir() if p.is_dir())
    use_kubectl = args.renderer == "kubectl" or (args.renderer == "auto" and shutil.which("kubectl"))
    versions = args.k8s_versions.split(",")
    failed = 0
    for ov in overlays:
        ov = ov.resolve()
        try:
            objs = kubectl_render(ov) if use_kubectl else python_render(ov)
            if args.cross_check and use_kubectl:
                mine = python_render(ov)
                if _strip_hashes(mine) != _strip_hashes(objs):
                    raise Invalid("python renderer and kubectl kustomize disagree")
        except (Invalid, OSError, KeyError, yaml.YAMLError) as e:
            print(f"FAIL {ov.name}: render: {e}")
            failed += 1
            continue
        if args.dump:
            args.dump.mkdir(parents=True, exist_ok=True)
            (args.dump / f"{ov.name}.yaml").write_text(yaml.safe_dump_all(objs, sort_keys=False))
        bad = 0
        for o in objs:
            ident = f"{o.get('kind')}/{(o.get('metadata') or {}).get('name')}"
            try:
                validate_schema(o, versions)
            except Invalid as e:
                print(f"FAIL {ov.name}: {ident}: {e}")
                bad += 1
        for e in check_cross_references(objs) + check_rules(objs):
            print(f"FAIL {ov.name}: {e}")
            bad += 1
        kinds = sorted({o["kind"] for o in objs})
        status = "ok  " if bad == 0 else "FAIL"
        print(f"{status} {ov.name}: {len(objs)} objects via {'kubectl kustomize' if use_kubectl else 'python renderer'}"
              f" ({', '.join(kinds)}); schemas k8s {', '.join(versions)}")
        failed += bad
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
