"""A real Kubernetes node beside the kwok GPU nodes: pods on it actually run.

containerd (Debian, private root/state/socket) + runc + the CNI bridge/host-local/loopback/portmap
plugins, kubelet and kube-proxy (iptables mode) built from the pinned Kubernetes release, and
CoreDNS (built from its module) answering ``<svc>.<ns>.svc.cluster.local`` for pods. Started by
``LocalCluster(real_node=True)`` after the control plane; reach it as ``cluster.real_node``.

Isolation. Several test sessions share one machine, and kube-proxy's iptables chains, the CNI
bridge and kubelet's cgroups are per host, so each node takes a *slot* ``k`` (a lock file under
``/run/stt-node``) and keeps everything in a network namespace of its own, ``stt-node-<k>``:

    host netns                              netns stt-node-<k>
    sttn<k>h 198.18.0.(4k+1)/30  <--veth-->  sttn<k>n 198.18.0.(4k+2)/30
    route 198.18.(64+k).0/24  (pods)         bridge stt-br0 198.18.(64+k).1/24 = node IP, DNS
    route 198.18.(128+k).0/24 (Services)     containerd, kubelet, kube-proxy, CoreDNS, pods

The namespace has no default route and nothing NATs: pods reach only each other, the host's
veth address (the apiserver listens there, see ``LocalCluster``) and Services. The host reaches
pod IPs and Service ClusterIPs through the two routes. kubelet's cgroups live under
``/stt-node-<k>``. ``stop()`` kills every container, unmounts what kubelet and containerd
mounted, removes the cgroups and deletes the namespace (which takes the veth, the bridge, the
routes and all iptables rules with it). A slot left by a killed session is cleaned when taken.

Scheduling. The node is tainted ``stt.dev/real-node=true:NoSchedule`` and labelled
``stt.dev/node=real``, so nothing lands on it by accident (tests written for kwok keep their
fake pods); a pod that should run for real tolerates the taint (``REAL_NODE_TOLERATION``) and
selects the label (``REAL_NODE_SELECTOR``); ``on_real_node(pod_spec)`` adds both. The node
advertises ``nvidia.com/gpu`` (node status capacity, as for any extended resource) so
GPU-requesting pods schedule and run on CPU.

Public interface (``RealNode``):
    name, slot, netns, pod_cidr, service_cidr, bridge_ip (node IP and cluster DNS), host_ip
    containerd_socket, ctr(*args), import_image(tar_path), images()
    (pytest: the ``real_node`` session fixture; pod specs: ``on_real_node(spec)``)
    kubelet/containerd/kube-proxy/coredns logs under ``<cluster dir>/logs/``
Images are never pulled: import them (``import_image``, a ``docker save`` or OCI archive; see
``stt_harness.imagetar``) and use ``imagePullPolicy: Never`` or a non-``latest`` tag.

Needs root, Linux with cgroup v1 controllers (this machine kind), and the Debian packages of
the Makefile's ``deps`` target; the binaries come from ``hack/build-tools.sh``.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import yaml

NODE_NAME = "stt-node"
SLOTS = 16
SLOT_DIR = Path("/run/stt-node")
TRANSIT_NET = ipaddress.ip_network("198.18.0.0/24")  # a /30 per slot
BRIDGE = "stt-br0"
CNI_BIN_DIRS = ("/usr/lib/cni", "/opt/cni/bin")
CGROUP_ROOT = Path("/sys/fs/cgroup")
PAUSE_IMAGE = "stt.local/pause:3.10.2"
REAL_NODE_TAINT = {"key": "stt.dev/real-node", "value": "true", "effect": "NoSchedule"}
REAL_NODE_TOLERATION = {"key": "stt.dev/real-node", "operator": "Exists", "effect": "NoSchedule"}
REAL_NODE_SELECTOR = {"stt.dev/node": "real"}
NODE_BINARIES = ("kubelet", "kube-proxy", "coredns")
DISK_EVICTION_SIGNALS = (
    "nodefs.available",
    "nodefs.inodesFree",
    "imagefs.available",
    "imagefs.inodesFree",
    "containerfs.available",
    "containerfs.inodesFree",
)
HOST_PROGRAMS = (
    "containerd",
    "containerd-shim-runc-v2",
    "runc",
    "ctr",
    "iptables",
    "conntrack",
    "ip",
    "nsenter",
)


def on_real_node(pod_spec: dict[str, Any]) -> dict[str, Any]:
    """``pod_spec`` (a PodSpec dict) with the toleration and node selector that place it on
    the real node; other tolerations and selectors are kept."""
    return {
        **pod_spec,
        "nodeSelector": {**(pod_spec.get("nodeSelector") or {}), **REAL_NODE_SELECTOR},
        "tolerations": [*(pod_spec.get("tolerations") or []), dict(REAL_NODE_TOLERATION)],
    }


class NodeError(RuntimeError):
    """The real node could not be set up."""


@dataclass(frozen=True)
class SlotNet:
    """Addresses of slot ``k`` (pure; see the module docstring for the picture)."""

    slot: int

    @property
    def netns(self) -> str:
        return f"stt-node-{self.slot}"

    @property
    def veth_host(self) -> str:
        return f"sttn{self.slot}h"

    @property
    def veth_node(self) -> str:
        return f"sttn{self.slot}n"

    @property
    def host_ip(self) -> str:
        return str(TRANSIT_NET.network_address + 4 * self.slot + 1)

    @property
    def node_transit_ip(self) -> str:
        return str(TRANSIT_NET.network_address + 4 * self.slot + 2)

    @property
    def pod_cidr(self) -> str:
        return f"198.18.{64 + self.slot}.0/24"

    @property
    def bridge_ip(self) -> str:
        return f"198.18.{64 + self.slot}.1"

    @property
    def service_cidr(self) -> str:
        return f"198.18.{128 + self.slot}.0/24"

    @property
    def cgroup_parent(self) -> str:
        return f"/stt-node-{self.slot}"


def missing_node_prereqs(bin_dir: Path) -> list[str]:
    """What the node needs from the machine but is not there (empty when it can start)."""
    missing = [b for b in NODE_BINARIES if not os.access(bin_dir / b, os.X_OK)]
    if not (bin_dir.parent / "images" / "pause.tar").is_file():
        missing.append("images/pause.tar")
    missing += [p for p in HOST_PROGRAMS if shutil.which(p) is None]
    if not any(Path(d, "bridge").exists() for d in CNI_BIN_DIRS):
        missing.append("CNI plugins (containernetworking-plugins)")
    if os.geteuid() != 0:
        missing.append("root")
    return missing


def cni_bin_dir() -> str:
    return next((d for d in CNI_BIN_DIRS if Path(d, "bridge").exists()), CNI_BIN_DIRS[0])


def containerd_config(root: Path, socket: Path, snapshotter: str, image_root: Path | None = None) -> str:
    """containerd 1.6 config: a private instance that only serves CRI for this node. Its
    content store and snapshots live in ``image_root`` (default ``root/root``): kept per slot
    across sessions, so a warm start finds large images already imported and unpacked."""
    image_root = image_root or root / "root"
    cri = 'plugins."io.containerd.grpc.v1.cri"'
    return f"""version = 2
root = "{image_root}"
state = "{root / "state"}"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.internal.v1.tracing", "io.containerd.tracing.processor.v1.otlp"]

[grpc]
  address = "{socket}"

[plugins."io.containerd.internal.v1.opt"]
  path = "{image_root / "opt"}"

[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # Without it runc fails with "can't get final child's PID from pipe" on this machine kind.
  restrict_oom_score_adj = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  # Pod network namespaces under the state dir, so tear-down finds and unmounts them all.
  netns_mounts_under_state_dir = true
  [{cri}.containerd]
    snapshotter = "{snapshotter}"
    default_runtime_name = "runc"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [{cri}.containerd.runtimes.runc.options]
        SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{cni_bin_dir()}"
    conf_dir = "{root / "cni"}"
    max_conf_num = 1
"""


def cni_conflist(net: SlotNet, ipam_dir: Path) -> dict[str, Any]:
    return {
        "cniVersion": "1.0.0",
        "name": net.netns,
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": True,
                "ipMasq": False,  # nothing leaves the namespace, so nothing to masquerade
                "hairpinMode": True,  # a pod reaching itself through its Service
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{"subnet": net.pod_cidr, "gateway": net.bridge_ip}]],
                    "routes": [{"dst": "0.0.0.0/0"}],
                    "dataDir": str(ipam_dir),
                },
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def kubelet_config(net: SlotNet, socket: Path, ca: Path, pod_logs: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        # This machine kind is cgroup v1 (hybrid), without systemd as init.
        "failCgroupV1": False,
        "cgroupDriver": "cgroupfs",
        "cgroupRoot": net.cgroup_parent,
        "failSwapOn": False,
        "containerRuntimeEndpoint": f"unix://{socket}",
        "address": net.bridge_ip,
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": {"enabled": False},
            "webhook": {"enabled": True},
            "x509": {"clientCAFile": str(ca)},
        },
        "authorization": {"mode": "Webhook"},
        "clusterDomain": "cluster.local",
        "clusterDNS": [net.bridge_ip],
        "resolvConf": "",  # pods with dnsPolicy Default get no upstream: nothing leaves the machine
        "podCIDR": net.pod_cidr,
        "podLogsDir": str(pod_logs),
        "registerWithTaints": [REAL_NODE_TAINT],
        # A shared test machine whose free disk dips now and then (once to 1 % during a CI run):
        # never evict test pods or delete imported images (the pause image among them) for disk.
        # "0%" switches a signal off; an unnamed one would stay off too, named here to be plain.
        "evictionHard": {"memory.available": "1Mi", **dict.fromkeys(DISK_EVICTION_SIGNALS, "0%")},
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": False,
        "syncFrequency": "10s",
        "nodeStatusUpdateFrequency": "2s",  # GPU capacity shows within 2 s of the patch
        "rotateCertificates": False,
    }


def kube_proxy_config(net: SlotNet, kubeconfig: Path) -> dict[str, Any]:
    return {
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": {"kubeconfig": str(kubeconfig)},
        "mode": "iptables",
        "clusterCIDR": net.pod_cidr,
        "hostnameOverride": NODE_NAME,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        # nf_conntrack_max is machine-wide: leave it alone.
        "conntrack": {"maxPerCore": 0, "min": 0},
        "iptables": {"localhostNodePorts": False, "syncPeriod": "10s", "minSyncPeriod": "0s"},
    }


def corefile(net: SlotNet, kubeconfig: Path) -> str:
    return f""".:53 {{
    bind {net.bridge_ip}
    errors
    ready {net.bridge_ip}:8181
    kubernetes cluster.local in-addr.arpa ip6.arpa {{
        kubeconfig {kubeconfig} stt-local
        pods insecure
        fallthrough in-addr.arpa ip6.arpa
    }}
    cache 5
}}
"""


COREDNS_RBAC: list[dict[str, Any]] = [
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRole",
        "metadata": {"name": "stt:coredns"},
        "rules": [
            {
                "apiGroups": [""],
                "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"],
            },
            {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]},
        ],
    },
    {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": {"name": "stt:coredns"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "stt:coredns"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "system:coredns"}],
    },
]


def _run(*argv: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if check and res.returncode != 0:
        raise NodeError(
            f"{' '.join(argv)} failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}"
        )
    return res


# Each kubelet (cAdvisor, certificate watchers) and containerd take inotify instances; several
# local clusters at once exhaust the default 128 per user and the kubelet exits with "too many
# open files". Only ever raised, never lowered (the setting is host-wide).
INOTIFY_FLOORS = {"max_user_instances": 8192, "max_user_watches": 1048576}


def _raise_inotify_limits() -> None:
    for key, floor in INOTIFY_FLOORS.items():
        path = Path("/proc/sys/fs/inotify") / key
        try:
            if int(path.read_text()) < floor:
                path.write_text(str(floor))
        except (OSError, ValueError):
            pass  # not ours to change here: the kubelet's own error will say so


def _in_ns(net: SlotNet, *argv: str) -> list[str]:
    # nsenter switches only the network namespace: mounts kubelet makes stay visible to
    # containerd and runc (`ip netns exec` would give each process a mount namespace of its own).
    return ["nsenter", f"--net=/run/netns/{net.netns}", "--", *argv]


# --------------------------------------------------------------------------------------------
# Slots and clean-up (also for what a killed session left behind).
# --------------------------------------------------------------------------------------------


def _take_slot() -> tuple[int, IO[str]]:
    """Lock the first free slot. Every free slot that a killed session left a record in is
    cleaned on the way (its containers would otherwise run on until that slot is reused)."""
    SLOT_DIR.mkdir(parents=True, exist_ok=True)
    taken: tuple[int, IO[str]] | None = None
    for k in range(SLOTS):
        f = open(SLOT_DIR / f"slot-{k}.lock", "a+")  # noqa: SIM115 - held for the node's life
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            continue
        _clean_recorded(k)
        if taken is None:
            taken = (k, f)
        else:
            f.close()
    if taken is None:
        raise NodeError(f"all {SLOTS} real-node slots in {SLOT_DIR} are taken")
    return taken


def _clean_recorded(k: int) -> None:
    """Clean slot ``k`` after a session that did not stop its node (the caller holds the lock)."""
    try:
        old = json.loads(_record_path(k).read_text())
    except (OSError, ValueError):
        return
    root = old.get("image_root")
    clean_slot(SlotNet(k), Path(old["dir"]) if old.get("dir") else None, Path(root) if root else None)
    with contextlib.suppress(OSError):
        _record_path(k).unlink()


def _mounts_under(prefixes: list[str]) -> list[str]:
    out = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        mnt = line.split()[4].replace("\\040", " ")
        if any(mnt == p or mnt.startswith(p.rstrip("/") + "/") for p in prefixes):
            out.append(mnt)
    return out


def unmount_all(prefixes: list[str]) -> None:
    # Deepest first; repeat because kubelet stacks bind mounts on its own root dir.
    for _ in range(10):
        mounts = _mounts_under(prefixes)
        if not mounts:
            return
        for m in sorted(mounts, key=lambda p: (-p.count("/"), p)):
            subprocess.run(["umount", "-l", m], capture_output=True)


def _cgroup_dirs(parent: str) -> list[Path]:
    """Every cgroup v1 (and the cgroup2 mount, if any) directory named by ``parent``."""
    dirs = []
    for ctrl in CGROUP_ROOT.iterdir() if CGROUP_ROOT.is_dir() else []:
        d = ctrl / parent.lstrip("/")
        if d.is_dir():
            dirs.append(d)
    return dirs


def _kill_cgroup_procs(parent: str) -> None:
    """SIGKILL every process left in the slot's cgroups (containers of a killed session)."""
    for top in _cgroup_dirs(parent):
        for procs in top.rglob("cgroup.procs"):
            with contextlib.suppress(OSError, ValueError):
                for pid in procs.read_text().split():
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(int(pid), signal.SIGKILL)


def _remove_cgroups(parent: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    for top in _cgroup_dirs(parent):
        while top.exists():
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                with contextlib.suppress(OSError):
                    d.rmdir()
            with contextlib.suppress(OSError):
                top.rmdir()
            if not top.exists() or time.monotonic() > deadline:
                break
            _kill_cgroup_procs(parent)
            time.sleep(0.2)


def _shim_pids(socket: Path) -> list[int]:
    """containerd-shim processes started for our containerd (they outlive it by design)."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            if argv and argv[0].endswith(b"containerd-shim-runc-v2") and str(socket).encode() in argv:
                pids.append(int(proc.name))
    return pids


def clean_slot(net: SlotNet, node_dir: Path | None, image_root: Path | None = None) -> None:
    """Remove everything a node in slot ``net.slot`` may have left (idempotent); the images
    under ``image_root`` stay, only mounts there go."""
    _kill_cgroup_procs(net.cgroup_parent)
    if node_dir is not None:
        for pid in _shim_pids(node_dir / "containerd.sock"):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    unmount_all([str(d) for d in (node_dir, image_root) if d is not None])
    _run("ip", "netns", "delete", net.netns, check=False)
    _run("ip", "link", "delete", net.veth_host, check=False)
    _remove_cgroups(net.cgroup_parent)
    # libcni's cache of ADD results, keyed by network name (pods were killed without a DEL).
    for cached in Path("/var/lib/cni/results").glob(f"{net.netns}-*"):
        with contextlib.suppress(OSError):
            cached.unlink()


def _record_path(slot: int) -> Path:
    return SLOT_DIR / f"slot-{slot}.json"


# --------------------------------------------------------------------------------------------
# The node.
# --------------------------------------------------------------------------------------------


@dataclass
class RealNode:
    """One real node; made by ``LocalCluster`` (``allocate`` before the control plane starts,
    because the apiserver's certificate and Service range depend on the slot)."""

    net: SlotNet
    _lock: IO[str] | None = field(default=None, repr=False)
    dir: Path | None = None
    image_root: Path | None = None
    snapshotter: str = "overlayfs"
    timings: dict[str, float] = field(default_factory=dict)

    name: str = NODE_NAME

    @classmethod
    def allocate(cls) -> RealNode:
        k, lock = _take_slot()
        node = cls(SlotNet(k), lock)
        clean_slot(node.net, None)  # a namespace or cgroups left without a record
        return node

    # -- addresses and handles --------------------------------------------------------------

    @property
    def slot(self) -> int:
        return self.net.slot

    @property
    def netns(self) -> str:
        return self.net.netns

    @property
    def pod_cidr(self) -> str:
        return self.net.pod_cidr

    @property
    def service_cidr(self) -> str:
        return self.net.service_cidr

    @property
    def bridge_ip(self) -> str:
        return self.net.bridge_ip

    @property
    def host_ip(self) -> str:
        return self.net.host_ip

    @property
    def containerd_socket(self) -> Path:
        if self.dir is None:
            raise NodeError("the node has not been started")
        return self.dir / "containerd.sock"

    def ctr(self, *args: str, timeout: float = 300) -> str:
        """Run containerd's ``ctr`` against this node's containerd (namespace k8s.io)."""
        return _run(
            "ctr", "--address", str(self.containerd_socket), "--namespace", "k8s.io", *args, timeout=timeout
        ).stdout

    def import_image(self, tar_path: Path | str) -> None:
        """Import a ``docker save`` / OCI archive; its tags become usable by pods at once."""
        self.ctr("images", "import", "--snapshotter", self.snapshotter, str(tar_path), timeout=600)

    def images(self) -> list[str]:
        return self.ctr("images", "list", "--quiet").split()

    def remove_images(self, refs: list[str]) -> None:
        """Untag ``refs`` and let containerd collect their layers (no-op for an empty list)."""
        if refs:
            self.ctr("images", "remove", "--sync", *refs)

    # -- set-up -------------------------------------------------------------------------------

    def setup_network(self) -> None:
        """The namespace, the veth pair, the bridge and the host's two routes."""
        _raise_inotify_limits()
        n = self.net
        _run("ip", "netns", "add", n.netns)
        _run("ip", "link", "add", n.veth_host, "type", "veth", "peer", "name", n.veth_node)
        _run("ip", "link", "set", n.veth_node, "netns", n.netns)
        _run("ip", "addr", "add", f"{n.host_ip}/30", "dev", n.veth_host)
        _run("ip", "link", "set", n.veth_host, "up")
        ns = ["ip", "-n", n.netns]
        _run(*ns, "link", "set", "lo", "up")
        _run(*ns, "addr", "add", f"{n.node_transit_ip}/30", "dev", n.veth_node)
        _run(*ns, "link", "set", n.veth_node, "up")
        _run(*ns, "link", "add", BRIDGE, "type", "bridge")
        _run(*ns, "addr", "add", f"{n.bridge_ip}/24", "dev", BRIDGE)
        _run(*ns, "link", "set", BRIDGE, "up")
        # Forwarding and bridge netfilter only inside the namespace (both are per-namespace).
        for key in ("net.ipv4.ip_forward=1", "net.bridge.bridge-nf-call-iptables=1"):
            _run(*_in_ns(n, "sysctl", "-qw", key))
        _run("ip", "route", "add", n.pod_cidr, "via", n.node_transit_ip, "dev", n.veth_host)
        _run("ip", "route", "add", n.service_cidr, "via", n.node_transit_ip, "dev", n.veth_host)
        for ctrl_dir in CGROUP_ROOT.iterdir():
            # kubelet wants its cgroupRoot to exist in every controller it uses.
            if (ctrl_dir / "cgroup.procs").exists():
                (ctrl_dir / n.cgroup_parent.lstrip("/")).mkdir(exist_ok=True)

    def start(
        self,
        node_dir: Path,
        ca: Path,
        launch: Callable[[str, list[str]], Any],
        kubeconfig_for: Callable[[str, str | None], Path],
        request: Callable[..., dict[str, Any]],
        wait: Callable[[Callable[[], bool], float, str], None],
        bin_dir: Path,
        pause_tar: Path,
        gpus: int,
        timeout: float,
        image_cache: Path | None = None,
    ) -> None:
        """Start containerd, import pause, then kubelet, kube-proxy and CoreDNS; wait until the
        node is Ready with GPU capacity and DNS answers. The callables come from LocalCluster:
        ``launch(name, argv)`` starts a component, ``kubeconfig_for(user, group)`` writes a
        client-cert kubeconfig that reaches the apiserver from the namespace. ``image_cache``:
        where containerd keeps images between sessions (``<image_cache>/slot-<k>``)."""
        self.dir = node_dir
        n = self.net
        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.timings[name] = round(now - mark, 2)
            mark = now

        node_dir.mkdir(parents=True, exist_ok=True)
        self.image_root = image_cache / f"slot-{n.slot}" if image_cache else None
        record = {"dir": str(node_dir), "image_root": str(self.image_root or ""), "pid": os.getpid()}
        _record_path(n.slot).write_text(json.dumps(record))
        cdir = node_dir / "containerd"
        (cdir / "cni").mkdir(parents=True, exist_ok=True)
        (cdir / "cni" / "10-stt-node.conflist").write_text(
            json.dumps(cni_conflist(n, node_dir / "ipam"), indent=1)
        )
        (node_dir / "containerd.toml").write_text(
            containerd_config(cdir, self.containerd_socket, self.snapshotter, self.image_root)
        )
        launch("containerd", _in_ns(n, "containerd", "--config", str(node_dir / "containerd.toml")))
        wait(lambda: self.containerd_socket.is_socket() and _ctr_ok(self), 60, "containerd socket")
        self.import_image(pause_tar)
        phase("containerd+pause")

        kubelet_kc = kubeconfig_for(f"system:node:{self.name}", "system:nodes")
        cfg = node_dir / "kubelet.yaml"
        cfg.write_text(yaml.safe_dump(kubelet_config(n, self.containerd_socket, ca, node_dir / "pod-logs")))
        labels = ",".join(
            f"{k}={v}" for k, v in {**REAL_NODE_SELECTOR, "nvidia.com/gpu.present": "true"}.items()
        )
        launch(
            "kubelet",
            _in_ns(
                n,
                str(bin_dir / "kubelet"),
                f"--config={cfg}",
                f"--kubeconfig={kubelet_kc}",
                f"--root-dir={node_dir / 'kubelet'}",
                f"--cert-dir={node_dir / 'kubelet-pki'}",
                f"--hostname-override={self.name}",
                f"--node-ip={n.bridge_ip}",
                f"--node-labels={labels}",
                "--v=1",
            ),
        )
        proxy_cfg = node_dir / "kube-proxy.yaml"
        proxy_cfg.write_text(yaml.safe_dump(kube_proxy_config(n, kubeconfig_for("system:kube-proxy", None))))
        launch("kube-proxy", _in_ns(n, str(bin_dir / "kube-proxy"), f"--config={proxy_cfg}", "--v=1"))

        for obj in COREDNS_RBAC:
            plural = "clusterroles" if obj["kind"] == "ClusterRole" else "clusterrolebindings"
            request("POST", f"/apis/rbac.authorization.k8s.io/v1/{plural}", obj)
        (node_dir / "Corefile").write_text(corefile(n, kubeconfig_for("system:coredns", None)))
        launch("coredns", _in_ns(n, str(bin_dir / "coredns"), "-conf", str(node_dir / "Corefile")))

        wait(lambda: self._registered(request), timeout, f"node {self.name} registered")
        phase("kubelet registered")
        # Extended resources are advertised through node status (as a device plugin would).
        request(
            "PATCH",
            f"/api/v1/nodes/{self.name}/status",
            [{"op": "add", "path": "/status/capacity/nvidia.com~1gpu", "value": str(gpus)}],
            content_type="application/json-patch+json",
        )
        wait(lambda: self._ready(request, gpus), timeout, f"node {self.name} Ready with nvidia.com/gpu")
        phase("node ready")
        wait(lambda: _http_ok(f"http://{n.bridge_ip}:8181/ready"), timeout, "CoreDNS /ready")
        phase("coredns ready")

    def _registered(self, request: Callable[..., dict[str, Any]]) -> bool:
        return _node(request, self.name) is not None

    def _ready(self, request: Callable[..., dict[str, Any]], gpus: int) -> bool:
        node = _node(request, self.name)
        if node is None:
            return False
        status = node.get("status", {})
        conds = {c["type"]: c["status"] for c in status.get("conditions", [])}
        taints = node.get("spec", {}).get("taints") or []
        return (
            conds.get("Ready") == "True"
            and status.get("allocatable", {}).get("nvidia.com/gpu") == str(gpus)
            and not any(t["key"].startswith("node.kubernetes.io/") for t in taints)
        )

    # -- tear-down ----------------------------------------------------------------------------

    def stop_containers(self) -> None:
        """Kill and delete every container through containerd while it still runs (best effort),
        so the kept image root holds images only, no containers of this session."""
        if self.dir is None or not self.containerd_socket.is_socket():
            return
        with contextlib.suppress(NodeError, subprocess.TimeoutExpired):
            for task in self.ctr("tasks", "list", "--quiet", timeout=20).split():
                with contextlib.suppress(NodeError):
                    self.ctr("tasks", "delete", "--force", task, timeout=20)
            for container in self.ctr("containers", "list", "--quiet", timeout=20).split():
                with contextlib.suppress(NodeError):
                    self.ctr("containers", "delete", container, timeout=20)
                # libcni's cached ADD results of the sandbox (loopback and bridge), never DELeted.
                for cached in Path("/var/lib/cni/results").glob(f"*-{container}-*"):
                    with contextlib.suppress(OSError):
                        cached.unlink()

    def cleanup(self) -> None:
        """After the components stopped: shims, mounts, cgroups, the namespace, the slot."""
        clean_slot(self.net, self.dir, self.image_root)
        with contextlib.suppress(OSError):
            _record_path(self.net.slot).unlink()
        if self._lock is not None:
            self._lock.close()
            self._lock = None


def _ctr_ok(node: RealNode) -> bool:
    try:
        node.ctr("version", timeout=10)
        return True
    except (NodeError, subprocess.TimeoutExpired):
        return False


def _node(request: Callable[..., dict[str, Any]], name: str) -> dict[str, Any] | None:
    for item in request("GET", "/api/v1/nodes", None).get("items", []):
        if item["metadata"]["name"] == name:
            return dict(item)
    return None


def _http_ok(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return bool(r.status == 200)
    except OSError:
        return False
