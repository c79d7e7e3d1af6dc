"""Pure parts of the local cluster launcher: manifests, command lines, CRD parsing, failure reports."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from stt_harness.cluster import (
    GPU_RESOURCE,
    KWOK_NODE_ANNOTATION,
    ClusterError,
    Component,
    Layout,
    LocalCluster,
    apiserver_args,
    cert_credentials,
    controller_manager_args,
    crd_files,
    fake_node,
    kubeconfig_doc,
    kwok_args,
    missing_tools,
    parse_crds,
    sweep_stale_dirs,
)
from stt_harness.cluster_fixtures import namespace_name

CRD = """\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: widgets.example.dev}
spec:
  group: example.dev
  names: {plural: widgets, kind: Widget}
  scope: Namespaced
  versions:
  - {name: v1, served: true, storage: true}
  - {name: v1beta1, served: false, storage: false}
"""


def test_fake_node_advertises_gpus_and_is_managed_by_kwok() -> None:
    node = fake_node("n0", gpus=8)
    assert node["metadata"]["annotations"][KWOK_NODE_ANNOTATION] == "fake"
    assert node["status"]["capacity"][GPU_RESOURCE] == "8"
    assert node["status"]["allocatable"][GPU_RESOURCE] == "8"
    assert node["metadata"]["labels"]["nvidia.com/gpu.present"] == "true"
    # capacity and allocatable must be separate objects: the API server serialises both.
    assert node["status"]["capacity"] is not node["status"]["allocatable"]


def test_kubeconfig_embeds_credentials() -> None:
    doc = kubeconfig_doc("https://127.0.0.1:1", b"CA", "admin", cert_credentials(b"CERT", b"KEY"))
    cluster = doc["clusters"][0]["cluster"]
    assert cluster["server"] == "https://127.0.0.1:1"
    assert base64.b64decode(cluster["certificate-authority-data"]) == b"CA"
    assert base64.b64decode(doc["users"][0]["user"]["client-key-data"]) == b"KEY"
    assert doc["current-context"] == doc["contexts"][0]["name"]


def test_command_lines_carry_the_security_settings(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    api = apiserver_args(lay, 6443, "http://127.0.0.1:2379")
    assert "--authorization-mode=Node,RBAC" in api
    assert f"--service-account-signing-key-file={lay.key('sa')}" in api
    assert "--bind-address=127.0.0.1" in api
    kcm = controller_manager_args(lay, 10257)
    assert "--use-service-account-credentials=true" in kcm
    assert "--leader-elect=false" in kcm
    assert f"--root-ca-file={lay.cert('ca')}" in kcm
    assert "--manage-all-nodes=false" in kwok_args(lay)


def test_parse_crds_reads_served_versions_and_skips_companions(tmp_path: Path) -> None:
    f = tmp_path / "crds.yaml"
    policy = {"apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy"}
    f.write_text(CRD + "---\n" + yaml.safe_dump(policy))
    [info] = parse_crds(f)
    assert (info.name, info.group, info.plural, info.versions) == (
        "widgets.example.dev",
        "example.dev",
        "widgets",
        ("v1",),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: [unclosed", "not valid YAML"),
        ("- just a list\n", "document 0 is not a Kubernetes object"),
        (
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: x}\n",
            "'spec'",
        ),
    ],
)
def test_parse_crds_names_the_file_and_problem(tmp_path: Path, text: str, message: str) -> None:
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ClusterError, match=message) as err:
        parse_crds(f)
    assert str(f) in str(err.value)


def test_crd_files_expands_directories_and_rejects_missing_paths(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(CRD)
    (tmp_path / "a.yml").write_text(CRD)
    (tmp_path / "notes.txt").write_text("x")
    assert [p.name for p in crd_files([tmp_path])] == ["a.yml", "b.yaml"]
    assert crd_files([]) == []
    with pytest.raises(ClusterError, match="no such file"):
        crd_files([tmp_path / "missing"])


def test_missing_tools_lists_what_build_tools_must_produce(tmp_path: Path) -> None:
    missing = missing_tools(tmp_path)
    assert "kube-apiserver" in missing and "kwok-stages/pod-ready.yaml" in missing
    assert "crds/gateway-api" in missing


def test_start_without_tools_says_how_to_build_them(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match=r"run hack/build-tools\.sh"):
        LocalCluster(tools_dir=tmp_path).start()


def test_a_dying_component_is_reported_with_its_log_tail(tmp_path: Path) -> None:
    c = LocalCluster(tools_dir=tmp_path)
    comp = Component(
        "fake-etcd",
        [sys.executable, "-c", "print('listen tcp: address already in use'); raise SystemExit(3)"],
        tmp_path / "logs" / "fake-etcd.log",
    )
    c.components.append(comp)
    comp.start()
    with pytest.raises(ClusterError) as err:
        c._wait(lambda: False, timeout=30, what="etcd /health")
    msg = str(err.value)
    assert "fake-etcd exited while waiting for etcd /health" in msg
    assert "exited with code 3" in msg
    assert "address already in use" in msg


def test_namespace_names_are_valid_unique_labels() -> None:
    a = namespace_name("test_deploy[Param-1 x]")
    b = namespace_name("test_deploy[Param-1 x]")
    assert a != b
    assert a.startswith("test-deploy-param-1-x-")
    long = namespace_name("t" * 200)
    assert len(long) <= 63 and long[0].isalnum()


def test_sweep_removes_only_directories_of_dead_owners(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True)
    stale, live, foreign = (tmp_path / f"stt-cluster-{n}" for n in ("stale", "live", "foreign"))
    for d in (stale, live, foreign):
        d.mkdir()
    (stale / "owner.pid").write_text(dead.stdout.decode().strip())
    (live / "owner.pid").write_text(str(os.getpid()))
    assert sweep_stale_dirs(tmp_path) == [stale]
    assert not stale.exists() and live.exists() and foreign.exists()


def test_workdir_with_foreign_files_is_refused(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    c = LocalCluster(tools_dir=tmp_path, workdir=tmp_path)
    with pytest.raises(ClusterError, match="not empty and not a previous cluster directory"):
        c._make_dir()
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_bad_crd_input_fails_before_anything_starts(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: CustomResourceDefinition\nmetadata: {name: x}\n")
    c = LocalCluster(tools_dir=tmp_path, crd_paths=[bad])
    with pytest.raises(ClusterError, match=r"bad\.yaml: document 0 lacks field 'spec'"):
        c.start()
    assert c.components == [] and c._lay is None
