"""The Helm chart, the rendered install bundle, the alerts, the dashboard and the Dockerfile.

Rendering uses the real `helm` (built by hack/build-tools.sh, built here if missing) and the
rules use Debian's `promtool`; no cluster is needed. What the chart renders is checked against
the operator's own contracts: its argument parser, its settings model and its metric names.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

import stt_operator
from stt_harness.cluster import ensure_tools
from stt_operator import evalmetrics, observability, runner
from stt_operator.settings import (
    DEFAULT_JOBS_IMAGE,
    DEFAULT_OPERATOR_IMAGE,
    DEFAULT_TRITON_IMAGE,
    OperatorSettings,
)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "stt-operator"
KUBE_VERSION = "1.36.0"
MONITORING = [
    "--set", "prometheusRule.enabled=true",
    "--set", "serviceMonitor.enabled=true",
    "--set", "workloadServiceMonitor.enabled=true",
]  # fmt: skip


@cache
def helm() -> str:
    return str(ensure_tools() / "bin" / "helm")


def run_helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([helm(), *args], capture_output=True, text=True, timeout=60)
    if check and res.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed ({res.returncode}):\n{res.stderr}")
    return res


def render(*args: str, release: str = "stt", namespace: str = "stt-system") -> list[dict[str, Any]]:
    out = run_helm("template", release, str(CHART), "-n", namespace, "--kube-version", KUBE_VERSION, *args)
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [d for d in by_kind(docs, kind) if name is None or d["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


def operator_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]


def parse_operator_args(container: dict[str, Any]) -> argparse.Namespace:
    """Parse the container's arguments with the operator's real `run` parser."""
    assert container["args"][0] == "run"
    parser = argparse.ArgumentParser(exit_on_error=False)
    runner.add_arguments(parser)
    return parser.parse_args(container["args"][1:])


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool (Debian package prometheus) is required: make deps"
    return path


# --------------------------------------------------------------------------------------------
# Chart basics
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "values",
    [
        [],
        [*MONITORING, "--set", "grafanaDashboard.enabled=true", "--set", "replicaCount=3"],
        ["--set", "watchNamespaces={team-a,team-b}", "--set", "peering.enabled=false"],
    ],
    ids=["defaults", "ha-monitoring", "namespaced"],
)
def test_helm_lint_strict_is_clean(values: list[str]) -> None:
    res = run_helm("lint", str(CHART), "--strict", "--kube-version", KUBE_VERSION, *values, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "0 chart(s) failed" in res.stdout
    assert "[WARNING]" not in res.stdout and "[ERROR]" not in res.stdout


def test_chart_versions_match_the_package() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert chart["appVersion"] == stt_operator.__version__
    # The chart's defaults and the operator's defaults name the same images.
    image = f"{values['image']['repository']}:{chart['appVersion']}"
    assert image == DEFAULT_OPERATOR_IMAGE
    assert values["config"]["tritonImage"] == DEFAULT_TRITON_IMAGE


def test_default_render_has_every_object_and_nothing_optional() -> None:
    docs = render()
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "ConfigMap",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "Service",
            "Deployment",
            "ClusterKopfPeering",
        ]
    )
    for d in docs:
        labels = d["metadata"]["labels"]
        assert labels["app.kubernetes.io/part-of"] == "stt-operator", d["metadata"]["name"]
        assert labels["app.kubernetes.io/instance"] == "stt"
        if d["kind"] not in ("ClusterRole", "ClusterRoleBinding", "ClusterKopfPeering"):
            assert d["metadata"]["namespace"] == "stt-system", d["metadata"]["name"]


def test_deployment_runs_the_operator_contract() -> None:
    docs = render()
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    container = operator_container(docs)
    args = parse_operator_args(container)
    assert args.all_namespaces and not args.namespaces
    assert args.peering == "stt-operator"
    assert (args.liveness_port, args.metrics_port) == (8080, 9090)
    assert args.config == "/etc/stt-operator/config.yaml"
    assert args.operator_image == DEFAULT_OPERATOR_IMAGE
    # Jobs, evaluators and the fetch-model init container run in the Jobs' image, not the slim one.
    assert args.jobs_image == args.fetch_image == DEFAULT_JOBS_IMAGE
    assert args.triton_image == DEFAULT_TRITON_IMAGE
    # No Prometheus address is guessed: analysis/analytics are off until one is configured.
    assert args.prometheus_url is None
    assert container["image"] == DEFAULT_OPERATOR_IMAGE

    assert pod["serviceAccountName"] == one(docs, "ServiceAccount")["metadata"]["name"]
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"healthz": 8080, "metrics": 9090}
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["STT_OPERATOR_LOG_FORMAT"] == "json"
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    config_map = volumes[mounts["/etc/stt-operator"]]["configMap"]["name"]
    assert config_map == one(docs, "ConfigMap")["metadata"]["name"]
    # The service selects the operator pods and exposes the metrics port.
    service = one(docs, "Service")
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert service["spec"]["ports"][0]["targetPort"] == "metrics"


def test_pod_meets_the_restricted_pod_security_standard() -> None:
    docs = render()
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    container = operator_container(docs)
    psc, csc = pod["securityContext"], container["securityContext"]
    assert psc["runAsNonRoot"] is True and psc["runAsUser"] == 65532 and psc["runAsUser"] != 0
    assert psc["seccompProfile"]["type"] == "RuntimeDefault"
    assert csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert csc["readOnlyRootFilesystem"] is True
    assert not csc.get("privileged")
    # A read-only root needs a writable /tmp.
    assert "/tmp" in {m["mountPath"] for m in container["volumeMounts"]}
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_settings_configmap_is_read_by_the_operator(tmp_path: Path) -> None:
    docs = render(
        "--set",
        "config.maxConcurrentABTests=7",
        "--set",
        "config.analyticsWindow=3d",
        "--set",
        "config.reconcileIntervalSeconds=2.5",
        "--set-json",
        'config.jobsPlacement={"nodeSelector":{"pool":"jobs"},"tolerations":[{"key":"k","operator":"Exists"}]}',
        "--set",
        "terminationGracePeriodSeconds=40",
    )
    path = tmp_path / "config.yaml"
    path.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    # extra="forbid" in OperatorSettings: an unknown key in the rendered file fails here.
    settings = OperatorSettings.load(str(path))
    values = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    assert settings.max_concurrent_abtests == 7
    assert settings.analytics_window == "3d"
    assert settings.reconcile_interval_s == 2.5
    assert "revisionHistoryLimit" not in values and "defaultABTestDuration" not in values  # did nothing
    # SIGTERM: the operator's own deadline ends before the kubelet's SIGKILL.
    assert settings.shutdown_timeout_s == 35
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] == 40
    assert settings.workers == values["workers"]
    assert settings.peering_lifetime_s == values["peeringLifetimeSeconds"]
    assert settings.watch_timeout_s == values["watchTimeoutSeconds"]
    assert settings.default_analysis_interval == values["defaultAnalysisInterval"]
    assert settings.jobs_placement.node_selector == {"pool": "jobs"}
    assert settings.jobs_placement.tolerations == [{"key": "k", "operator": "Exists"}]
    assert settings.serving_placement.empty()
    assert (settings.job_cpu, settings.job_memory) == ("2", "4Gi")


def test_prometheus_sources_and_allowlist_reach_the_operator(tmp_path: Path) -> None:
    """The administrator's Prometheus choices are the only ones the operator uses."""
    docs = render(
        "--set",
        "config.prometheusUrl=http://prom.monitoring.svc:9090",
        "--set-json",
        'config.prometheusSources={"team-a": "http://prom-a.monitoring.svc:9090"}',
        "--set-json",
        'config.prometheusAllowedUrls=["http://thanos.monitoring.svc:9090"]',
        "--set",
        "config.scopeCustomQueries=false",
    )
    args = parse_operator_args(operator_container(docs))
    assert args.prometheus_url == "http://prom.monitoring.svc:9090"
    path = tmp_path / "config.yaml"
    path.write_text(one(docs, "ConfigMap")["data"]["config.yaml"])
    settings = OperatorSettings.load(str(path), prometheus_url=args.prometheus_url)
    assert settings.prometheus_for(source="team-a") == "http://prom-a.monitoring.svc:9090"
    assert (
        settings.prometheus_for(address="http://thanos.monitoring.svc:9090/")
        == "http://thanos.monitoring.svc:9090/"
    )
    assert settings.prometheus_for() == "http://prom.monitoring.svc:9090"
    assert settings.scope_custom_queries is False
    defaults = OperatorSettings.load(
        _write(tmp_path / "d.yaml", one(render(), "ConfigMap")["data"]["config.yaml"])
    )
    assert defaults.prometheus_url is None and defaults.prometheus_sources == {}
    assert defaults.scope_custom_queries is True and not defaults.prometheus_configured
    with pytest.raises(Exception, match="prometheusUrl"):
        render("--set", "config.prometheusUrl=gopher://x")


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def test_config_change_rolls_the_pods() -> None:
    def checksum(*args: str) -> str:
        return one(render(*args), "Deployment")["spec"]["template"]["metadata"]["annotations"][
            "checksum/config"
        ]

    assert checksum() != checksum("--set", "config.maxConcurrentABTests=9")


def test_image_digest_pins_the_operator_and_its_jobs() -> None:
    digest = "sha256:" + "ab" * 32
    container = operator_container(render("--set", f"image.digest={digest}"))
    assert container["image"].endswith(f"@{digest}")
    args = parse_operator_args(container)
    assert args.operator_image == container["image"]
    assert args.jobs_image == args.fetch_image == "ghcr.io/stt-operator/stt-operator-jobs:0.1.0"
    jobs_digest = "sha256:" + "cd" * 32
    args = parse_operator_args(
        operator_container(
            render("--set", f"jobsImage.digest={jobs_digest}", "--set", "config.fetchImage=f:1")
        )
    )
    assert args.jobs_image == f"ghcr.io/stt-operator/stt-operator-jobs@{jobs_digest}"
    assert args.fetch_image == "f:1"


# --------------------------------------------------------------------------------------------
# RBAC
# --------------------------------------------------------------------------------------------


def operator_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The roles bound to the operator's ServiceAccount (not the aggregated user roles)."""
    bound = {b["roleRef"]["name"] for b in by_kind(docs, "ClusterRoleBinding") + by_kind(docs, "RoleBinding")}
    return [r for r in by_kind(docs, "ClusterRole") + by_kind(docs, "Role") if r["metadata"]["name"] in bound]


def rules_of(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for role in operator_roles(docs) for r in role["rules"]]


def grants(docs: list[dict[str, Any]], group: str, resource: str) -> set[str]:
    verbs: set[str] = set()
    for rule in rules_of(docs):
        if group in rule["apiGroups"] and resource in rule["resources"]:
            verbs |= set(rule["verbs"])
    return verbs


def test_rbac_is_least_privilege() -> None:
    docs = render(*MONITORING)
    for rule in rules_of(docs):
        assert "*" not in rule["verbs"] and "*" not in rule["resources"] and "*" not in rule["apiGroups"], (
            rule
        )
        assert not rule.get("nonResourceURLs"), rule
    assert grants(docs, "", "secrets") == set()
    assert grants(docs, "", "pods") == {"get", "list", "watch"}
    # The capacity pre-flight reads Nodes (allocatable), never writes them; off, it reads none.
    assert grants(docs, "", "nodes") == {"get", "list"}
    assert grants(render("--set", "config.capacityPreflight=false"), "", "nodes") == set()
    assert grants(docs, "rbac.authorization.k8s.io", "clusterroles") == set()
    for kind in ("sttmodels", "modeldeployments", "abtests"):
        assert {"get", "list", "watch", "patch"} <= grants(docs, "stt.dev", kind)
        assert "create" not in grants(docs, "stt.dev", kind)  # users create them, not the operator
        assert "patch" in grants(docs, "stt.dev", f"{kind}/status")
        assert grants(docs, "stt.dev", f"{kind}/finalizers") == {"update"}
    owned = {"get", "list", "watch", "create", "update", "patch", "delete"}
    assert grants(docs, "apps", "deployments") == owned
    assert grants(docs, "", "services") == owned
    assert grants(docs, "", "configmaps") == owned
    assert grants(docs, "batch", "jobs") == owned
    assert grants(docs, "gateway.networking.k8s.io", "httproutes") == owned
    assert grants(docs, "monitoring.coreos.com", "servicemonitors") == owned
    assert {"create", "patch"} <= grants(docs, "", "events")
    assert grants(docs, "apiextensions.k8s.io", "customresourcedefinitions") == {"get", "list", "watch"}
    assert grants(docs, "", "namespaces") == {"get", "list", "watch"}
    assert {"list", "watch", "patch"} <= grants(docs, "kopf.dev", "clusterkopfpeerings")


def test_default_user_roles_get_the_api() -> None:
    docs = render()
    roles = {r["metadata"]["name"]: r for r in by_kind(docs, "ClusterRole")}
    view, edit = roles["stt-stt-operator-view"], roles["stt-stt-operator-edit"]
    assert view["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-view"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    assert {v for r in view["rules"] for v in r["verbs"]} == {"get", "list", "watch"}
    # People write specs; only the operator writes status.
    assert not any("/status" in res for r in edit["rules"] for res in r["resources"])
    assert {g for r in view["rules"] + edit["rules"] for g in r["apiGroups"]} == {"stt.dev"}
    off = render("--set", "rbac.aggregateToDefaultRoles=false")
    assert {r["metadata"]["name"] for r in by_kind(off, "ClusterRole")} == {
        "stt-stt-operator",
        "stt-stt-operator-cluster",
    }


def test_prometheus_operator_rbac_can_be_turned_off() -> None:
    docs = render("--set", "rbac.prometheusOperator=false")
    assert grants(docs, "monitoring.coreos.com", "servicemonitors") == set()


def test_cluster_wide_install_binds_everything_cluster_wide() -> None:
    docs = render()
    bindings = {b["roleRef"]["name"]: b for b in by_kind(docs, "ClusterRoleBinding")}
    assert set(bindings) == {"stt-stt-operator", "stt-stt-operator-cluster"}
    sa = one(docs, "ServiceAccount")["metadata"]
    for binding in bindings.values():
        assert binding["subjects"] == [
            {"kind": "ServiceAccount", "name": sa["name"], "namespace": "stt-system"}
        ]
    assert by_kind(docs, "RoleBinding") == [] and by_kind(docs, "KopfPeering") == []


def test_namespaced_install_binds_only_the_watched_namespaces() -> None:
    docs = render("--set", "watchNamespaces={team-a,team-b}")
    args = parse_operator_args(operator_container(docs))
    assert args.namespaces == ["team-a", "team-b"] and not args.all_namespaces
    role_bindings = by_kind(docs, "RoleBinding")
    assert sorted(b["metadata"]["namespace"] for b in role_bindings) == ["team-a", "team-b"]
    namespaced_role = next(r for r in operator_roles(docs) if not r["metadata"]["name"].endswith("-cluster"))
    assert {b["roleRef"]["name"] for b in role_bindings} == {namespaced_role["metadata"]["name"]}
    # Only the cluster-scoped reads Kopf needs stay cluster-wide.
    (cluster_binding,) = by_kind(docs, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"].endswith("-cluster")
    assert grants(docs, "kopf.dev", "clusterkopfpeerings") == set()
    assert {"list", "watch", "patch"} <= grants(docs, "kopf.dev", "kopfpeerings")
    peerings = by_kind(docs, "KopfPeering")
    assert sorted(p["metadata"]["namespace"] for p in peerings) == ["team-a", "team-b"]
    assert {p["metadata"]["name"] for p in peerings} == {args.peering}
    assert by_kind(docs, "ClusterKopfPeering") == []


# --------------------------------------------------------------------------------------------
# HA, values validation
# --------------------------------------------------------------------------------------------


def test_replicas_need_peering_and_get_a_disruption_budget() -> None:
    docs = render("--set", "replicaCount=2")
    deployment = one(docs, "Deployment")
    assert deployment["spec"]["replicas"] == 2
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert one(docs, "PodDisruptionBudget")["spec"]["maxUnavailable"] == 1

    res = run_helm(
        "template", "stt", str(CHART), "--kube-version", KUBE_VERSION,
        "--set", "replicaCount=2", "--set", "peering.enabled=false", check=False,
    )  # fmt: skip
    assert res.returncode != 0
    assert "peering.enabled must be true when replicaCount > 1" in res.stderr


def test_standalone_single_replica_never_overlaps() -> None:
    docs = render("--set", "peering.enabled=false")
    assert parse_operator_args(operator_container(docs)).peering is None
    assert one(docs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert by_kind(docs, "ClusterKopfPeering") == [] and by_kind(docs, "PodDisruptionBudget") == []


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("config.logFormat=xml", "/config/logFormat"),
        ("config.maxConcurrentABTests=0", "/config/maxConcurrentABTests"),
        ("config.analyticsWindow=tomorrow", "/config/analyticsWindow"),
        ("watchNamespaces={Team_A}", "/watchNamespaces/0"),
        ("image.digest=latest", "/image/digest"),
        ("replicaCount=-1", "/replicaCount"),
        ("unknownKey=1", "unknownKey"),
    ],
)
def test_values_schema_rejects_bad_values_naming_the_field(setting: str, message: str) -> None:
    res = run_helm(
        "template", "stt", str(CHART), "--kube-version", KUBE_VERSION, "--set", setting, check=False
    )
    assert res.returncode != 0
    assert message in res.stderr, res.stderr


# --------------------------------------------------------------------------------------------
# CRDs and the rendered bundle
# --------------------------------------------------------------------------------------------


def crd_names(paths: list[Path]) -> set[str]:
    names = set()
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                names.add(doc["metadata"]["name"])
    return names


def test_chart_crds_match_the_generated_crds() -> None:
    res = subprocess.run(
        ["bash", str(ROOT / "hack" / "sync-chart-crds.sh"), "--check"], capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    generated = crd_names(sorted((ROOT / "crds").glob("*.yaml")))
    in_chart = crd_names(sorted((CHART / "crds").glob("*.yaml")))
    assert in_chart == generated | {"clusterkopfpeerings.kopf.dev", "kopfpeerings.kopf.dev"}
    assert {"sttmodels.stt.dev", "modeldeployments.stt.dev", "abtests.stt.dev"} <= in_chart


def test_sync_check_names_a_drifted_crd(tmp_path: Path) -> None:
    # A copy of the script's inputs in a scratch tree: the check must name the stale file.
    (tmp_path / "hack").mkdir()
    shutil.copy(ROOT / "hack" / "sync-chart-crds.sh", tmp_path / "hack")
    shutil.copytree(CHART / "crds", tmp_path / "charts" / "stt-operator" / "crds")
    (tmp_path / "crds").mkdir()
    for f in (ROOT / "crds").glob("*.yaml"):
        shutil.copy(f, tmp_path / "crds")
    (tmp_path / "charts" / "stt-operator" / "crds" / "old.stt.dev.yaml").write_text("kind: x\n")
    script = str(tmp_path / "hack" / "sync-chart-crds.sh")
    res = subprocess.run(["bash", script, "--check"], capture_output=True, text=True)
    assert res.returncode == 1 and "old.stt.dev.yaml (stale)" in res.stderr
    subprocess.run(["bash", script], check=True, capture_output=True)
    assert not (tmp_path / "charts" / "stt-operator" / "crds" / "old.stt.dev.yaml").exists()
    assert (tmp_path / "charts" / "stt-operator" / "crds" / "kopf-peerings.yaml").exists()


def test_install_bundle_is_up_to_date_with_the_chart() -> None:
    res = subprocess.run(
        ["bash", str(ROOT / "hack" / "render-install-manifests.sh"), "--check"],
        capture_output=True,
        text=True,
        env={"PATH": f"{Path(helm()).parent}:/usr/bin:/bin", "HOME": str(Path.home())},
    )
    assert res.returncode == 0, res.stderr


def test_install_bundle_contents() -> None:
    install = ROOT / "manifests" / "install"
    crds = [d for d in yaml.safe_load_all((install / "crds.yaml").read_text()) if d]
    assert {d["kind"] for d in crds} == {"CustomResourceDefinition"}
    assert crd_names([install / "crds.yaml"]) == crd_names(sorted((CHART / "crds").glob("*.yaml")))
    docs = [d for d in yaml.safe_load_all((install / "stt-operator.yaml").read_text()) if d]
    namespace = one(docs, "Namespace")
    assert namespace["metadata"]["name"] == "stt-system"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    assert docs[0]["kind"] == "Namespace"  # created before what lives in it
    assert one(docs, "Deployment")["metadata"]["name"] == "stt-operator"
    assert all(d["metadata"]["labels"].get("app.kubernetes.io/managed-by") != "Helm" for d in docs)
    # `kubectl apply -k` and `kubectl apply -f dir/` see the same files.
    kustomization = yaml.safe_load((install / "Kustomization").read_text())
    assert sorted(kustomization["resources"]) == sorted(p.name for p in install.glob("*.yaml"))


def test_argocd_application_points_at_the_chart_with_valid_values(tmp_path: Path) -> None:
    app = yaml.safe_load((ROOT / "manifests" / "argocd" / "application.yaml").read_text())
    assert app["kind"] == "Application" and app["apiVersion"] == "argoproj.io/v1alpha1"
    source = app["spec"]["source"]
    assert (ROOT / source["path"] / "Chart.yaml").is_file()
    assert "ServerSideApply=true" in app["spec"]["syncPolicy"]["syncOptions"]
    # Argo CD renders the chart with these values: they must satisfy the chart's schema.
    values = tmp_path / "values.yaml"
    values.write_text(yaml.safe_dump(source["helm"]["valuesObject"]))
    docs = render("-f", str(values), release=source["helm"]["releaseName"])
    assert one(docs, "Deployment")["spec"]["replicas"] == source["helm"]["valuesObject"]["replicaCount"]
    assert by_kind(docs, "PrometheusRule") and by_kind(docs, "ServiceMonitor")


# --------------------------------------------------------------------------------------------
# Monitoring: alerts and dashboard
# --------------------------------------------------------------------------------------------

ALERTS = CHART / "files" / "alerts.yaml"
DASHBOARD = CHART / "files" / "dashboard.json"
METRIC = re.compile(r"\b((?:stt_operator|stt_eval|nv)_[a-z_]+)\b")


def known_metric_names() -> set[str]:
    """Series names the operator and the evaluator export (counters with _total, histograms' parts)."""
    names: set[str] = set()
    operator_metrics = [v for v in vars(observability).values() if isinstance(v, MetricWrapperBase)]
    families = [f for metric in operator_metrics for f in metric.describe()]
    families += observability.ENDPOINTS.collect()  # the per-endpoint series, built when scraped
    for family in families:
        if family.type == "histogram":
            names |= {f"{family.name}_{part}" for part in ("bucket", "sum", "count")}
        else:
            names.add(family.name + ("_total" if family.type == "counter" else ""))
    # evalmetrics names every exposed series in one constant each (counters already end in _total).
    names |= {v for k, v in vars(evalmetrics).items() if k.isupper() and isinstance(v, str) and "_" in v}
    names |= {f"{evalmetrics.LATENCY}_{part}" for part in ("bucket", "sum", "count")}
    return names


def test_alert_rules_are_valid_promql() -> None:
    res = subprocess.run([promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    alerts = [r for g in groups for r in g["rules"] if "alert" in r]
    assert len(alerts) >= 8
    for rule in alerts:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_monitoring_refers_only_to_metrics_that_exist() -> None:
    known = known_metric_names()
    assert "stt_operator_reconciles_total" in known and "stt_eval_errors_total" in known
    text = ALERTS.read_text() + DASHBOARD.read_text()
    ours = {m for m in METRIC.findall(text) if not m.startswith("nv_")}
    assert ours, "no operator or evaluator metric referenced"
    assert ours <= known, f"unknown metric names: {sorted(ours - known)}"
    # Triton's own series (docs/triton-and-evaluator.md).
    triton = {m for m in METRIC.findall(text) if m.startswith("nv_")}
    assert triton <= {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_memory_total_bytes",
    }, triton


PROMTOOL_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: 'stt_operator_reconciles_total{{kind="ModelDeployment", result="ok"}}'
        values: '0+10x40'
      - series: 'stt_operator_reconciles_total{{kind="ModelDeployment", result="error"}}'
        values: '0+5x40'
      - series: 'stt_operator_reconciles_total{{kind="STTModel", result="ok"}}'
        values: '0+10x40'
      # Deployments' writes came back within 50 ms for 15 minutes, then took 60 s; STTModels' never lagged.
      - series: 'stt_operator_watch_lag_seconds_bucket{{kind="Deployment", le="0.05"}}'
        values: '0+10x15 150x25'
      - series: 'stt_operator_watch_lag_seconds_bucket{{kind="Deployment", le="30"}}'
        values: '0+10x15 150x25'
      - series: 'stt_operator_watch_lag_seconds_bucket{{kind="Deployment", le="120"}}'
        values: '0+10x40'
      - series: 'stt_operator_watch_lag_seconds_bucket{{kind="Deployment", le="+Inf"}}'
        values: '0+10x40'
      - series: 'stt_operator_watch_lag_seconds_bucket{{kind="STTModel", le="0.05"}}'
        values: '0+10x40'
      - series: 'stt_operator_watch_lag_seconds_bucket{{kind="STTModel", le="+Inf"}}'
        values: '0+10x40'
      - series: 'stt_operator_rollbacks_total{{namespace="asr", name="en"}}'
        values: '0 0 0 1 1 1 1 1 1 1'
      - series: 'nv_inference_request_success{{namespace="asr", model="a"}}'
        values: '0+90x40'
      - series: 'nv_inference_request_failure{{namespace="asr", model="a", reason="BACKEND"}}'
        values: '0+10x40'
      - series: 'nv_inference_request_success{{namespace="asr", model="b"}}'
        values: '0+100x40'
      - series: 'nv_inference_request_failure{{namespace="asr", model="b", reason="BACKEND"}}'
        values: '0+1x40'
    alert_rule_test:
      - eval_time: 30m
        alertname: STTOperatorReconcileErrors
        exp_alerts:
          - exp_labels: {{severity: warning, kind: ModelDeployment}}
            exp_annotations:
              summary: More than 10% of ModelDeployment reconciles fail
              description: >-
                33.33% of ModelDeployment reconciles ended in an error over the last 10 minutes.
                See the operator logs and the resources' Events.
      - eval_time: 20m
        alertname: STTOperatorWatchLagging
        exp_alerts: []
      - eval_time: 40m
        alertname: STTOperatorWatchLagging
        exp_alerts:
          - exp_labels: {{severity: warning, kind: Deployment}}
            exp_annotations:
              summary: The operator sees Deployment changes late (p99 1m 59s)
              description: >-
                The operator's own writes of Deployment objects took more than 30 s (99th
                percentile) to come back through its watch for 15 minutes: it reconciles on old news,
                so rollouts and routes follow the cluster late. Look at the apiserver's load and the
                operator's CPU.
      - eval_time: 5m
        alertname: STTModelDeploymentRolledBack
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: asr, name: en}}
            exp_annotations:
              summary: ModelDeployment asr/en rolled back
              description: >-
                The operator rolled back a rollout of asr/en.
                `kubectl describe modeldeployment -n asr en` shows
                the failed analysis in status.analysisRuns and the Events.
      - eval_time: 30m
        alertname: STTModelDeploymentRolledBack
        exp_alerts: []
      - eval_time: 30m
        alertname: STTTritonInferenceErrors
        exp_alerts:
          - exp_labels: {{severity: warning, namespace: asr, model: a}}
            exp_annotations:
              summary: Triton model a in asr fails 10% of requests
              description: nv_inference_request_failure over all requests has been above 5% for 10 minutes.
  - interval: 1m
    input_series:
      # 1 error per 10 words for a day, then 2 per 10 for the last two hours, 200 words a minute.
      - series: 'stt_eval_errors_total{{{wer_labels}, unit="word"}}'
        values: '0+20x1440 28800+40x120'
      - series: 'stt_eval_reference_length_total{{{wer_labels}, unit="word"}}'
        values: '0+200x1560'
    promql_expr_test:
      - expr: stt:eval_wer:ratio_1h
        eval_time: 12h
        exp_samples:
          - labels: 'stt:eval_wer:ratio_1h{{{wer_labels}}}'
            value: 0.1
    alert_rule_test:
      - eval_time: 20h
        alertname: STTModelWERRegression
        exp_alerts: []
      - eval_time: 1545m
        alertname: STTModelWERRegression
        exp_alerts:
          - exp_labels:
              {{severity: warning, namespace: asr, endpoint: en, variant: stable, model: m, language: en-US}}
            exp_annotations:
              summary: WER of m (en-US) on en rose to 20%
              description: >-
                The evaluator's WER for this variant over the last hour is more than 20% above its
                WER over the previous day. Check the model, the evaluation set and the audio path.
"""


def test_alerts_fire_on_synthetic_series(tmp_path: Path) -> None:
    """promtool's rule unit tests: each alert fires on the series it is for, and only then."""
    rules = tmp_path / "alerts.yaml"
    shutil.copy(ALERTS, rules)
    spec = tmp_path / "alerts_test.yaml"
    wer_labels = 'namespace="asr", endpoint="en", variant="stable", model="m", language="en-US"'
    spec.write_text(PROMTOOL_TESTS.format(rules=rules.name, wer_labels=wer_labels))
    res = subprocess.run(
        [promtool(), "test", "rules", spec.name], capture_output=True, text=True, cwd=tmp_path
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "SUCCESS" in res.stdout + res.stderr


def dashboard_exprs(dashboard: dict[str, Any]) -> list[str]:
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    return exprs


def test_dashboard_is_valid_and_every_query_parses(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "stt-operator"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    titles = " ".join(p["title"] for p in dashboard["panels"])
    for topic in ("WER", "CER", "latency", "GPU", "Rollbacks", "Throughput", "confidence"):
        assert topic.lower() in titles.lower(), topic
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "namespace", "endpoint", "language"} <= variables
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 25
    # promtool has no "check this expression"; recording rules carry each query through its parser.
    rules = []
    for i, expr in enumerate(exprs):
        concrete = expr.replace("$__rate_interval", "5m").replace("$__range", "6h").replace('=~"$', '=~"x')
        if concrete.startswith("label_values("):
            concrete = re.sub(r"^label_values\((.*), [a-z_]+\)$", r"\1", concrete)
        assert "$" not in concrete, f"unhandled Grafana variable in {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": concrete})
    path = tmp_path / "dashboard_rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    res = subprocess.run([promtool(), "check", "rules", str(path)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_workload_service_monitor_selects_what_the_operator_creates() -> None:
    """Triton and evaluator Services, as the operator's builders label them, are scraped."""
    from stt_operator.builders.serving import Revision, ServingParams, triton_service
    from stt_operator.evaluator.manifests import EvaluatorParams, evaluator_service

    def selected(monitor: dict[str, Any], labels: dict[str, str]) -> bool:
        selector = monitor["spec"]["selector"]
        if not selector["matchLabels"].items() <= labels.items():
            return False
        return all(labels.get(e["key"]) in e["values"] for e in selector["matchExpressions"])

    monitor = one(render(*MONITORING), "ServiceMonitor", "stt-stt-operator-workloads")
    assert monitor["spec"]["namespaceSelector"] == {"any": True}
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    triton = triton_service(
        ServingParams(
            deployment_name="asr", namespace="ns", revision=Revision("m", "d"), role="stable", pod_spec={}
        )
    )
    assert selected(monitor, triton["metadata"]["labels"])
    assert "metrics" in {p["name"] for p in triton["spec"]["ports"]}
    evaluator = evaluator_service(
        EvaluatorParams(owner_name="asr", namespace="ns", endpoint="asr", targets=(), evalset_uri="file:///e")
    )
    assert selected(monitor, evaluator["metadata"]["labels"])
    assert [p["name"] for p in evaluator["spec"]["ports"]] == ["metrics"]
    operator_service = one(render(), "Service")
    assert not selected(monitor, operator_service["metadata"]["labels"])

    namespaced = one(
        render(*MONITORING, "--set", "watchNamespaces={a,b}"), "ServiceMonitor", "stt-stt-operator-workloads"
    )
    assert namespaced["spec"]["namespaceSelector"] == {"matchNames": ["a", "b"]}


def test_monitoring_objects_render_from_the_same_files() -> None:
    docs = render(*MONITORING, "--set", "grafanaDashboard.enabled=true")
    rule = one(docs, "PrometheusRule")
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())
    monitor = one(docs, "ServiceMonitor", "stt-stt-operator")
    assert monitor["spec"]["endpoints"][0]["honorLabels"] is True
    assert monitor["spec"]["endpoints"][0]["port"] == "metrics"
    assert (
        monitor["spec"]["selector"]["matchLabels"].items()
        <= one(docs, "Service")["metadata"]["labels"].items()
    )
    dashboard = one(docs, "ConfigMap", "stt-stt-operator-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(dashboard["data"]["stt-operator.json"]) == json.loads(DASHBOARD.read_text())
    monitoring = ROOT / "manifests" / "monitoring"
    assert json.loads((monitoring / "grafana-dashboard.json").read_text()) == json.loads(
        DASHBOARD.read_text()
    )


# --------------------------------------------------------------------------------------------
# Dockerfile
# --------------------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (FROM included)."""
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for word, rest in dockerfile_instructions():
        if word == "FROM":
            current = []
            stages[rest.split(" AS ")[-1].strip()] = current
        current.append((word, rest))
    return stages


def test_dockerfile_builds_slim_operator_jobs_and_triton_images() -> None:
    instructions = dockerfile_instructions()
    args = dict(rest.split("=", 1) for word, rest in instructions if word == "ARG" and "=" in rest)
    assert args["PYTHON_IMAGE"].startswith("python:3.11-slim"), "public default base for real users"
    stages = _dockerfile_stages()
    assert {"operator", "jobs", "triton"} <= stages.keys()
    assert list(stages)[-1] == "operator", "a plain `docker build .` gives the operator image"
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def users(stage: str) -> list[str]:
        return [rest for word, rest in stages[stage] if word == "USER"]

    for stage in ("operator", "jobs"):
        uid = users(stage)[-1].split(":")[0]
        assert uid.isdigit() and int(uid) == 65532, "numeric uid, so runAsNonRoot can verify it"
        assert values["podSecurityContext"]["runAsUser"] == int(uid)
        assert ("ENTRYPOINT", '["stt-operator"]') in stages[stage]
        assert any(
            word == "LABEL" and "org.opencontainers.image.title" in rest for word, rest in stages[stage]
        )
    assert ("CMD", '["run"]') in stages["operator"]
    assert ("COPY", "--from=build-operator /opt/venv /opt/venv") in stages["operator"]
    assert ("COPY", "--from=build-jobs /opt/venv /opt/venv") in stages["jobs"]
    from stt_operator.triton.pod import TRITON_UID

    assert users("triton")[-1] == f"{TRITON_UID}:{TRITON_UID}", "the uid the operator's Triton pods run as"

    def installs(stage: str) -> str:
        return " ".join(rest for word, rest in stages[stage] if word == "RUN" and "pip install" in rest)

    # The operator's environment has the core dependencies only; the Jobs' adds the `jobs` extra.
    assert "pip install --no-deps . " in installs("build-operator") + " "
    assert "[" not in installs("build-operator")
    assert 'pip install --no-deps ".[jobs]"' in installs("build-jobs")
    assert "requirements.py pyproject.toml jobs" in installs("build-jobs")
    assert "[dev" not in installs("build-operator") + installs("build-jobs")
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert 'stt-operator = "stt_operator.cli:main"' in pyproject
    assert re.search(r"^jobs = \[", pyproject, re.M), "extra 'jobs' not in pyproject.toml"
    core = re.search(r"^dependencies = \[(.*?)^\]", pyproject, re.M | re.S).group(1)
    for heavy in ("onnxruntime", '"onnx', "picklescan", "fickling", "boto3"):
        assert heavy not in core, f"{heavy} would make the operator image heavy"


def test_dockerignore_sends_only_the_sources() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "allowlist: ignore everything, then re-include"
    included = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = set()
    for word, rest in dockerfile_instructions():
        if word == "COPY" and not rest.startswith("--from"):
            copied |= {p.rstrip("/") for p in rest.split()[:-1]}
    outside = {c for c in copied if not any(c == i or c.startswith(i + "/") for i in included)}
    assert copied and not outside, f"COPY sources not in the build context: {outside}"
