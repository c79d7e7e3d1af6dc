"""Pure parts of the real node: slot addresses, generated configs, the image archive writer."""

from __future__ import annotations

import hashlib
import io
import ipaddress
import json
import tarfile
import tomllib
from pathlib import Path

import pytest

from stt_harness.cluster import POD_CIDR, SERVICE_CIDR, Layout, apiserver_args
from stt_harness.imagetar import image_tar
from stt_harness.node import (
    DISK_EVICTION_SIGNALS,
    PAUSE_IMAGE,
    REAL_NODE_TAINT,
    SLOTS,
    SlotNet,
    cni_conflist,
    containerd_config,
    corefile,
    kube_proxy_config,
    kubelet_config,
)


def test_slot_networks_never_overlap_each_other_or_the_kwok_ranges() -> None:
    nets = []
    for k in range(SLOTS):
        n = SlotNet(k)
        transit = ipaddress.ip_network(f"{n.host_ip}/30", strict=False)
        assert ipaddress.ip_address(n.node_transit_ip) in transit
        assert ipaddress.ip_address(n.bridge_ip) in ipaddress.ip_network(n.pod_cidr)
        nets += [transit, ipaddress.ip_network(n.pod_cidr), ipaddress.ip_network(n.service_cidr)]
    for net in nets:
        # 198.18.0.0/15 is reserved for benchmarking: used by nothing else on a machine.
        assert net.subnet_of(ipaddress.ip_network("198.18.0.0/15"))
    nets += [ipaddress.ip_network(SERVICE_CIDR), ipaddress.ip_network(POD_CIDR)]
    for i, a in enumerate(nets):
        for b in nets[i + 1 :]:
            assert not a.overlaps(b), (a, b)
    names = [SlotNet(k).veth_host for k in range(SLOTS)] + [SlotNet(k).veth_node for k in range(SLOTS)]
    assert len(set(names)) == len(names) and max(map(len, names)) <= 15  # IFNAMSIZ


def test_kubelet_config_has_what_this_machine_kind_needs(tmp_path: Path) -> None:
    n = SlotNet(3)
    cfg = kubelet_config(n, tmp_path / "c.sock", tmp_path / "ca.crt", tmp_path / "logs")
    assert cfg["failCgroupV1"] is False and cfg["cgroupDriver"] == "cgroupfs" and cfg["failSwapOn"] is False
    assert cfg["cgroupRoot"] == "/stt-node-3"  # never the machine-wide kubepods of another node
    assert cfg["address"] == n.bridge_ip and cfg["clusterDNS"] == [n.bridge_ip]
    assert cfg["containerRuntimeEndpoint"] == f"unix://{tmp_path / 'c.sock'}"
    assert cfg["registerWithTaints"] == [REAL_NODE_TAINT]
    assert cfg["authentication"]["anonymous"]["enabled"] is False
    # No disk signal may evict a pod or garbage-collect an image (the pause image went that way
    # once, when the shared disk dipped under 1 % free, and every later sandbox failed).
    assert {k: v for k, v in cfg["evictionHard"].items() if k != "memory.available"} == dict.fromkeys(
        DISK_EVICTION_SIGNALS, "0%"
    )
    assert set(DISK_EVICTION_SIGNALS) >= {"nodefs.available", "imagefs.available", "nodefs.inodesFree"}
    assert cfg["imageGCHighThresholdPercent"] == 100


def test_containerd_config_is_private_and_restricts_oom_score(tmp_path: Path) -> None:
    doc = tomllib.loads(containerd_config(tmp_path, tmp_path / "c.sock", "overlayfs"))
    assert doc["root"].startswith(str(tmp_path)) and doc["state"].startswith(str(tmp_path))
    assert doc["grpc"]["address"] == str(tmp_path / "c.sock")
    cri = doc["plugins"]["io.containerd.grpc.v1.cri"]
    assert cri["restrict_oom_score_adj"] is True
    assert cri["sandbox_image"] == PAUSE_IMAGE
    assert cri["netns_mounts_under_state_dir"] is True
    assert cri["containerd"]["snapshotter"] == "overlayfs"
    assert cri["containerd"]["runtimes"]["runc"]["options"]["SystemdCgroup"] is False
    assert cri["cni"]["conf_dir"].startswith(str(tmp_path))


def test_cni_kube_proxy_and_coredns_configs(tmp_path: Path) -> None:
    n = SlotNet(1)
    cni = cni_conflist(n, tmp_path / "ipam")
    bridge = cni["plugins"][0]
    assert bridge["ipMasq"] is False  # nothing is NATed off the machine
    assert bridge["ipam"]["ranges"] == [[{"subnet": n.pod_cidr, "gateway": n.bridge_ip}]]
    assert bridge["ipam"]["dataDir"] == str(tmp_path / "ipam")
    proxy = kube_proxy_config(n, tmp_path / "kc")
    assert proxy["mode"] == "iptables" and proxy["clusterCIDR"] == n.pod_cidr
    assert proxy["conntrack"]["maxPerCore"] == 0  # leaves the machine-wide conntrack table alone
    core = corefile(n, tmp_path / "kc")
    assert f"bind {n.bridge_ip}" in core and "kubernetes cluster.local" in core
    assert "forward" not in core  # no upstream: nothing leaves the machine


def test_apiserver_listens_beyond_loopback_only_with_a_real_node(tmp_path: Path) -> None:
    lay = Layout(tmp_path)
    plain = apiserver_args(lay, 6443, "http://127.0.0.1:2379")
    assert "--bind-address=127.0.0.1" in plain and "--endpoint-reconciler-type=none" in plain
    node = apiserver_args(lay, 6443, "http://127.0.0.1:2379", SlotNet(2).service_cidr, SlotNet(2).host_ip)
    assert f"--advertise-address={SlotNet(2).host_ip}" in node
    assert f"--service-cluster-ip-range={SlotNet(2).service_cidr}" in node
    assert "--kubelet-preferred-address-types=InternalIP,Hostname" in node


@pytest.mark.parametrize("user", ["65532:65532", "65535:65535"])
def test_image_tar_is_deterministic_and_consistent(tmp_path: Path, user: str) -> None:
    binary = tmp_path / "tool"
    binary.write_bytes(b"\x7fELF fake")
    binary.chmod(0o755)
    ids = [
        image_tar(tmp_path / f"{i}.tar", "stt.local/t:1", {"bin/tool": binary}, ["/bin/tool"], user=user)
        for i in (1, 2)
    ]
    assert ids[0] == ids[1]
    assert (tmp_path / "1.tar").read_bytes() == (tmp_path / "2.tar").read_bytes()
    with tarfile.open(tmp_path / "1.tar") as t:
        manifest = json.load(t.extractfile("manifest.json"))  # type: ignore[arg-type]
        assert manifest[0]["RepoTags"] == ["stt.local/t:1"]
        config_bytes = t.extractfile(manifest[0]["Config"]).read()  # type: ignore[union-attr]
        layer = t.extractfile(manifest[0]["Layers"][0]).read()  # type: ignore[union-attr]
    config = json.loads(config_bytes)
    assert "sha256:" + hashlib.sha256(config_bytes).hexdigest() == ids[0]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(layer).hexdigest()]
    assert config["config"]["Entrypoint"] == ["/bin/tool"] and config["config"]["User"] == user
    with tarfile.open(fileobj=io.BytesIO(layer)) as lt:
        tool = lt.getmember("bin/tool")
        assert tool.mode == 0o755 and tool.mtime == 0 and tool.uid == 0
        assert lt.getmember("tmp").mode == 0o1777


def test_slots_are_exclusive_while_held(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from stt_harness import node

    monkeypatch.setattr(node, "SLOT_DIR", tmp_path)
    monkeypatch.setattr(node, "SLOTS", 2)
    a, lock_a = node._take_slot()
    b, lock_b = node._take_slot()
    assert (a, b) == (0, 1)
    with pytest.raises(node.NodeError, match="taken"):
        node._take_slot()
    lock_a.close()  # a session ends (or dies): its slot is free again
    c, lock_c = node._take_slot()
    assert c == 0
    lock_b.close()
    lock_c.close()


def test_on_real_node_adds_toleration_and_selector_keeping_the_rest() -> None:
    from stt_harness.node import REAL_NODE_SELECTOR, REAL_NODE_TOLERATION, on_real_node

    gpu = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    spec = {"containers": [], "nodeSelector": {"nvidia.com/gpu.present": "true"}, "tolerations": [gpu]}
    out = on_real_node(spec)
    assert out["nodeSelector"] == {"nvidia.com/gpu.present": "true", **REAL_NODE_SELECTOR}
    assert out["tolerations"] == [gpu, REAL_NODE_TOLERATION]
    assert spec["tolerations"] == [gpu]  # the input is not changed


def test_older_tags_of_the_built_images_are_the_stale_ones() -> None:
    from stt_harness.closedloop import stale_tags

    present = {
        "localhost/stt-operator:old1",
        "localhost/stt-operator:new",
        "localhost/stt-operator-jobs:old1",
        "localhost/stt-operator-jobs:new",
        PAUSE_IMAGE,  # another repository: kept
        "quay.io/prometheus/prometheus:v3",  # kept
        "localhost/stt-operator@sha256:abc",  # a digest reference, not a tag: kept
    }
    wanted = {"localhost/stt-operator:new", "localhost/stt-operator-jobs:new"}
    assert stale_tags(present, wanted) == ["localhost/stt-operator-jobs:old1", "localhost/stt-operator:old1"]
    assert stale_tags(wanted, wanted) == []
