"""A real, local Kubernetes control plane for tests and the demo.

etcd + kube-apiserver + kube-controller-manager + kube-scheduler (built from the pinned
Kubernetes release by ``hack/build-tools.sh``) on random loopback ports, plus kwok, which plays
the kubelet for fake GPU nodes: it keeps their leases fresh and marks scheduled pods Running and
Ready. Everything lives in a temporary directory that is removed on exit.

    with LocalCluster(nodes=2, crd_paths=[...]) as c:
        c.kubectl("get", "nodes")

``LocalCluster(real_node=True)`` adds a real node (kubelet + containerd + kube-proxy + CoreDNS,
``c.real_node``, see ``stt_harness.node``): the apiserver then also listens on the node's
host-side address so pods and the node reach it, and Services use the node's range.

Run ``python -m stt_harness.cluster`` for a cluster that stays up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import ctypes
import datetime as dt
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import InitVar, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from stt_harness.node import RealNode, missing_node_prereqs, unmount_all

if TYPE_CHECKING:  # the client library is only needed by api_client()
    from kubernetes.client import ApiClient

SERVICE_CIDR = "10.96.0.0/16"
POD_CIDR = "10.244.0.0/16"
KWOK_NODE_ANNOTATION = "kwok.x-k8s.io/node"
KWOK_NODE_ANNOTATION_VALUE = "fake"
GPU_RESOURCE = "nvidia.com/gpu"
TOOLS = ("etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubectl", "kwok", "helm")
# Stage files this project adds to kwok or replaces kwok's with (same file name wins).
PROJECT_KWOK_STAGES = Path(__file__).parent / "kwok"
# kwok's own stage set, copied by build-tools.sh: node init + lease heartbeat, pod ready/complete/delete.
KWOK_STAGES = (
    "node-initialize.yaml",
    "node-heartbeat-with-lease.yaml",
    "pod-ready.yaml",
    "pod-complete.yaml",
    "pod-delete.yaml",
)


# Cluster-scoped kinds a CRD bundle may carry (Gateway API ships a ValidatingAdmissionPolicy).
_INSTALLABLE = {
    "CustomResourceDefinition": "customresourcedefinitions",
    "ValidatingAdmissionPolicy": "validatingadmissionpolicies",
    "ValidatingAdmissionPolicyBinding": "validatingadmissionpolicybindings",
}


class ClusterError(RuntimeError):
    """The local cluster could not start or a component died."""


# --------------------------------------------------------------------------------------------
# Pure parts: paths, command lines, manifests.
# --------------------------------------------------------------------------------------------


def default_tools_dir() -> Path:
    """Where build-tools.sh puts its output (same rule as the script)."""
    if env := os.environ.get("STT_TOOLS_DIR"):
        return Path(env)
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "stt-operator" / "tools"


def repo_root(start: Path | None = None) -> Path | None:
    """The checkout that holds hack/build-tools.sh, searching upwards from this file."""
    here = (start or Path(__file__)).resolve()
    for parent in here.parents:
        if (parent / "hack" / "build-tools.sh").is_file():
            return parent
    return None


def missing_tools(tools_dir: Path) -> list[str]:
    """Names of the binaries and data build-tools.sh should have produced but did not."""
    missing = [t for t in TOOLS if not os.access(tools_dir / "bin" / t, os.X_OK)]
    missing += [f"kwok-stages/{s}" for s in KWOK_STAGES if not (tools_dir / "kwok-stages" / s).is_file()]
    if not (tools_dir / "crds" / "gateway-api").is_dir():
        missing.append("crds/gateway-api")
    return missing


@dataclass(frozen=True)
class Layout:
    """File names inside the cluster's temporary directory."""

    root: Path

    @property
    def pki(self) -> Path:
        return self.root / "pki"

    def cert(self, name: str) -> Path:
        return self.pki / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.pki / f"{name}.key"

    def kubeconfig(self, user: str) -> Path:
        return self.root / ("kubeconfig" if user == "admin" else f"{user}.kubeconfig")

    def log(self, component: str) -> Path:
        return self.root / "logs" / f"{component}.log"

    @property
    def etcd_data(self) -> Path:
        return self.root / "etcd-data"

    @property
    def kwok_config(self) -> Path:
        return self.root / "kwok.yaml"


def etcd_args(lay: Layout, client_port: int, peer_port: int) -> list[str]:
    client = f"http://127.0.0.1:{client_port}"
    peer = f"http://127.0.0.1:{peer_port}"
    return [
        "--name=default",
        f"--data-dir={lay.etcd_data}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        "--initial-cluster-state=new",
        # A throw-away test store: durability is not worth the fsync cost on a busy machine.
        "--unsafe-no-fsync",
        # Room for 10,000 + 10,000 endpoints and as many Argo Rollouts in one run (bench/scale):
        # etcd's 2 GiB default is a limit, not an allocation.
        "--quota-backend-bytes=8589934592",
        "--log-level=warn",
    ]


def apiserver_args(
    lay: Layout, port: int, etcd_url: str, service_cidr: str = SERVICE_CIDR, node_host_ip: str | None = None
) -> list[str]:
    """``node_host_ip``: a real node's host-side address; the apiserver then listens on every
    address (the node's namespace reaches the host only there, never through loopback) and
    advertises it, so the ``kubernetes`` Service sends pods to it."""
    if node_host_ip:
        where = [
            "--bind-address=0.0.0.0",
            f"--advertise-address={node_host_ip}",
            "--endpoint-reconciler-type=lease",
        ]
    else:
        # The kubernetes Service cannot point at a loopback address; nothing here needs it.
        where = [
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            "--endpoint-reconciler-type=none",
        ]
    return [
        *where,
        f"--secure-port={port}",
        f"--cert-dir={lay.pki}",
        f"--tls-cert-file={lay.cert('apiserver')}",
        f"--tls-private-key-file={lay.key('apiserver')}",
        f"--client-ca-file={lay.cert('ca')}",
        f"--etcd-servers={etcd_url}",
        f"--service-cluster-ip-range={service_cidr}",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={lay.cert('sa-pub')}",
        f"--service-account-signing-key-file={lay.key('sa')}",
        "--authorization-mode=Node,RBAC",
        # Published in kube-system/extension-apiserver-authentication; without it every component
        # that reads that ConfigMap logs "missing content for CA bundle" forever.
        f"--requestheader-client-ca-file={lay.cert('ca')}",
        "--requestheader-allowed-names=front-proxy-client",
        "--requestheader-username-headers=X-Remote-User",
        "--requestheader-group-headers=X-Remote-Group",
        "--requestheader-extra-headers-prefix=X-Remote-Extra-",
        "--allow-privileged=true",
        # kubectl logs/exec/port-forward through the real node's kubelet.
        f"--kubelet-client-certificate={lay.cert('apiserver-kubelet-client')}",
        f"--kubelet-client-key={lay.key('apiserver-kubelet-client')}",
        # The node's name resolves nowhere; its InternalIP is the address to dial.
        "--kubelet-preferred-address-types=InternalIP,Hostname",
        "--profiling=false",
        "--v=1",
    ]


def _control_loop_args(lay: Layout, user: str, port: int, cert_dir: str) -> list[str]:
    """What controller-manager and scheduler share: their kubeconfig, a loopback serving port."""
    kc = lay.kubeconfig(user)
    return [
        f"--kubeconfig={kc}",
        f"--authentication-kubeconfig={kc}",
        f"--authorization-kubeconfig={kc}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={lay.root / cert_dir}",
        "--leader-elect=false",
    ]


def controller_manager_args(lay: Layout, port: int, service_cidr: str = SERVICE_CIDR) -> list[str]:
    return [
        *_control_loop_args(lay, "kube-controller-manager", port, "kcm-serving"),
        "--use-service-account-credentials=true",
        f"--root-ca-file={lay.cert('ca')}",
        f"--service-account-private-key-file={lay.key('sa')}",
        f"--cluster-signing-cert-file={lay.cert('ca')}",
        f"--cluster-signing-key-file={lay.key('ca')}",
        f"--service-cluster-ip-range={service_cidr}",
        "--controllers=*",
        "--profiling=false",
        "--v=1",
    ]


def scheduler_args(lay: Layout, port: int) -> list[str]:
    return [
        *_control_loop_args(lay, "kube-scheduler", port, "scheduler-serving"),
        "--profiling=false",
        "--v=1",
    ]


def kwok_args(lay: Layout) -> list[str]:
    return [
        f"--kubeconfig={lay.kubeconfig('kwok')}",
        f"--config={lay.kwok_config}",
        "--manage-all-nodes=false",
        f"--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}={KWOK_NODE_ANNOTATION_VALUE}",
        "--node-lease-duration-seconds=40",
        f"--cidr={POD_CIDR}",
        "--node-ip=127.0.0.1",
    ]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def kubeconfig_doc(server: str, ca_pem: bytes, user: str, credentials: dict[str, str]) -> dict[str, Any]:
    """A self-contained kubeconfig (CA embedded) for one identity; ``credentials`` is the
    kubeconfig ``user`` block (see ``cert_credentials``, or ``{"token": ...}``)."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "stt-local", "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}
        ],
        "users": [{"name": user, "user": credentials}],
        "contexts": [{"name": "stt-local", "context": {"cluster": "stt-local", "user": user}}],
        "current-context": "stt-local",
    }


def cert_credentials(cert_pem: bytes, key_pem: bytes) -> dict[str, str]:
    return {"client-certificate-data": _b64(cert_pem), "client-key-data": _b64(key_pem)}


def fake_node(
    name: str, gpus: int = 4, cpu: str = "32", memory: str = "256Gi", pods: int = 110
) -> dict[str, Any]:
    """A Node that kwok manages (by annotation), advertising GPUs like the NVIDIA device plugin."""
    resources = {"cpu": cpu, "memory": memory, "pods": str(pods), GPU_RESOURCE: str(gpus)}
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {
                KWOK_NODE_ANNOTATION: KWOK_NODE_ANNOTATION_VALUE,
                "node.alpha.kubernetes.io/ttl": "0",
            },
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
                "nvidia.com/gpu.present": "true",
            },
        },
        # Node status may be set on create; kwok keeps capacity/allocatable as given.
        "status": {"capacity": resources, "allocatable": dict(resources)},
    }


@dataclass(frozen=True)
class CRDInfo:
    """What discovery must serve once a CRD is installed."""

    name: str
    group: str
    plural: str
    versions: tuple[str, ...]
    source: Path


def crd_files(paths: Iterable[Path | str]) -> list[Path]:
    """Expand files and directories into the YAML files they hold, in a stable order."""
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix in (".yaml", ".yml") and q.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise ClusterError(f"CRD path {p}: no such file or directory")
    return out


def parse_crds(path: Path) -> list[CRDInfo]:
    """The CRDs in one YAML file. Companion objects (e.g. Gateway API's ValidatingAdmissionPolicy)
    are applied with them but not waited for; a document without a kind is an error."""
    return _crd_infos(path, load_yaml_docs(path))


def load_yaml_docs(path: Path) -> list[Any]:
    """Non-empty YAML documents of a file, with libyaml when present (Gateway API's CRDs are
    1.3 MB: ~2 s in pure Python, ~0.15 s in C)."""
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        return [d for d in yaml.load_all(path.read_text(), Loader=loader) if d]
    except yaml.YAMLError as exc:
        raise ClusterError(f"CRD file {path}: not valid YAML: {exc}") from exc


@dataclass(frozen=True)
class CRDBundle:
    """One CRD file, parsed and checked before anything starts."""

    path: Path
    docs: list[Any]
    crds: list[CRDInfo]


def load_crd_bundles(paths: Iterable[Path | str]) -> list[CRDBundle]:
    bundles = []
    for f in crd_files(paths):
        docs = load_yaml_docs(f)
        bundles.append(CRDBundle(f, docs, _crd_infos(f, docs)))
    return bundles


def _crd_infos(path: Path, docs: list[Any]) -> list[CRDInfo]:
    infos = []
    for i, doc in enumerate(docs):
        if not isinstance(doc, dict) or not doc.get("kind") or not doc.get("apiVersion"):
            raise ClusterError(
                f"CRD file {path}: document {i} is not a Kubernetes object (no kind/apiVersion)"
            )
        if doc["kind"] != "CustomResourceDefinition":
            continue
        try:
            spec = doc["spec"]
            infos.append(
                CRDInfo(
                    name=doc["metadata"]["name"],
                    group=spec["group"],
                    plural=spec["names"]["plural"],
                    versions=tuple(v["name"] for v in spec["versions"] if v.get("served", True)),
                    source=path,
                )
            )
        except (KeyError, TypeError) as exc:
            raise ClusterError(f"CRD file {path}: document {i} lacks field {exc}") from exc
    return infos


def tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Certificates (cryptography). ECDSA P-256: fast to generate, accepted by every component.
# --------------------------------------------------------------------------------------------


def _write_pki(lay: Layout, service_cidr: str = SERVICE_CIDR, extra_ips: Sequence[str] = ()) -> None:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    lay.pki.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    # Back-dated an hour so small clock differences never make a fresh cert "not yet valid".
    not_before, not_after = now - dt.timedelta(hours=1), now + dt.timedelta(days=365)

    def save_key(name: str, key: ec.EllipticCurvePrivateKey) -> None:
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        lay.key(name).write_bytes(pem)
        lay.key(name).chmod(0o600)

    def name_of(cn: str, org: str | None = None) -> x509.Name:
        attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
        if org:
            attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
        return x509.Name(attrs)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = name_of("stt-local-ca")
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    save_key("ca", ca_key)
    lay.cert("ca").write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))

    def issue(name: str, subject: x509.Name, server: bool) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        b = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(ca_name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH] if server else [ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if server:
            service_ip = next(ipaddress.ip_network(service_cidr).hosts())
            dns = [
                "localhost",
                "kubernetes",
                "kubernetes.default",
                "kubernetes.default.svc",
                "kubernetes.default.svc.cluster.local",
            ]
            sans: list[x509.GeneralName] = [x509.DNSName(d) for d in dns]
            sans += [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.IPAddress(service_ip)]
            sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in extra_ips]
            b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        save_key(name, key)
        lay.cert(name).write_bytes(b.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))

    issue("apiserver", name_of("kube-apiserver"), server=True)
    issue("admin", name_of("stt-admin", "system:masters"), server=False)
    issue("kube-controller-manager", name_of("system:kube-controller-manager"), server=False)
    issue("kube-scheduler", name_of("system:kube-scheduler"), server=False)
    # kwok writes node status, leases and pod status for any pod: cluster-admin is the honest fit.
    issue("kwok", name_of("kwok-controller", "system:masters"), server=False)
    # The apiserver's identity towards kubelets (logs, exec); kubelet's webhook authorizes it.
    issue(
        "apiserver-kubelet-client", name_of("kube-apiserver-kubelet-client", "system:masters"), server=False
    )

    sa_key = ec.generate_private_key(ec.SECP256R1())
    save_key("sa", sa_key)
    lay.cert("sa-pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )


def issue_client_cert(lay: Layout, name: str, cn: str, org: str | None = None) -> None:
    """A client certificate ``name`` (CN ``cn``, O ``org``) signed by the cluster CA."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    ca_cert = x509.load_pem_x509_certificate(lay.cert("ca").read_bytes())
    ca_key = serialization.load_pem_private_key(lay.key("ca").read_bytes(), password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(attrs))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    lay.key(name).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    lay.key(name).chmod(0o600)
    lay.cert(name).write_bytes(cert.public_bytes(serialization.Encoding.PEM))


# --------------------------------------------------------------------------------------------
# Processes.
# --------------------------------------------------------------------------------------------


TEMP_PREFIX = "stt-cluster-"
OWNER_FILE = "owner.pid"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep_stale_dirs(tmp: Path | None = None) -> list[Path]:
    """Remove cluster directories left behind by killed test runs (their owner process is gone;
    the components died with it through PR_SET_PDEATHSIG). Live clusters are left alone."""
    removed = []
    for d in Path(tmp or tempfile.gettempdir()).glob(f"{TEMP_PREFIX}*"):
        try:
            pid = int((d / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours, or just being created
        if not _pid_alive(pid):
            unmount_all([str(d)])  # a real node's kubelet and containerd mounts, if any
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d)
    return removed


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> None:
    """Runs in the child before exec: if the test process dies, the kernel kills the component."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


@dataclass
class Component:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own process group, killed as a whole
                env=self.env,
                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def failure(self, why: str) -> ClusterError:
        code = None if self.proc is None else self.proc.poll()
        state = "is running" if code is None else f"exited with code {code}"
        return ClusterError(
            f"{self.name} {why} ({state}); last lines of {self.log_path}:\n{tail(self.log_path)}"
        )

    def stop(self, grace: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(5)


# --------------------------------------------------------------------------------------------
# The cluster.
# --------------------------------------------------------------------------------------------


@dataclass
class LocalCluster:
    """A real control plane on loopback with ``nodes`` fake GPU nodes; a context manager."""

    nodes: int = 2
    gpus_per_node: int = 4
    crd_paths: Sequence[Path | str] = ()
    tools_dir: Path = field(default_factory=default_tools_dir)
    start_timeout: float = 180.0
    keep_dir: bool = False
    workdir: Path | None = None
    # Start a real node too (``stt_harness.node``); afterwards ``real_node`` is that RealNode.
    real_node: InitVar[bool] = False
    real_node_gpus: int = 4

    def __post_init__(self, real_node: bool) -> None:
        self.bin_dir = self.tools_dir / "bin"
        self.components: list[Component] = []
        self.server = ""
        self.startup_seconds = 0.0
        self.timings: dict[str, float] = {}  # seconds per start-up phase, for slow-start reports
        self._lay: Layout | None = None
        self._ssl: ssl.SSLContext | None = None
        self._owns_dir = False
        self._crd_bundles: list[CRDBundle] = []
        self._want_real_node = real_node
        self.real_node: RealNode | None = None  # set while a real node runs

    # -- public API ----------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.layout.kubeconfig("admin")

    @property
    def layout(self) -> Layout:
        if self._lay is None:
            raise ClusterError("the cluster has not been started")
        return self._lay

    @property
    def kwok_node_names(self) -> list[str]:
        return [f"kwok-gpu-{i}" for i in range(self.nodes)]

    @property
    def node_names(self) -> list[str]:
        """Every node: the kwok GPU nodes, then the real node if there is one."""
        return self.kwok_node_names + ([self.real_node.name] if self.real_node else [])

    @property
    def service_cidr(self) -> str:
        return self.real_node.service_cidr if self.real_node else SERVICE_CIDR

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment for subprocesses (kubectl, helm, the operator) that targets this cluster.

        helm's cache/config/data go to the cluster directory, so a person's ~/.config/helm and
        repositories are neither used nor changed."""
        env = dict(os.environ if base is None else base)
        env["KUBECONFIG"] = str(self.kubeconfig)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
            env[var] = str(self.layout.root / "helm" / var.split("_")[1].lower())
        return env

    def kubectl(self, *args: str, check: bool = True, input: str | None = None, timeout: float = 120) -> str:
        """Run kubectl against this cluster and return its stdout."""
        return self._tool("kubectl", args, check=check, input=input, timeout=timeout)

    def helm(self, *args: str, check: bool = True, timeout: float = 300) -> str:
        """Run helm (built by build-tools.sh) against this cluster and return its stdout."""
        return self._tool("helm", args, check=check, input=None, timeout=timeout)

    def _tool(self, name: str, args: Sequence[str], check: bool, input: str | None, timeout: float) -> str:
        res = subprocess.run(
            [str(self.bin_dir / name), f"--kubeconfig={self.kubeconfig}", *args],
            capture_output=True,
            text=True,
            input=input,
            timeout=timeout,
            env=self.env(),
        )
        if check and res.returncode != 0:
            raise ClusterError(f"{name} {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout

    def api_client(self) -> ApiClient:
        """A fresh ``kubernetes.client.ApiClient`` authenticated as cluster admin."""
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.server
        cfg.ssl_ca_cert = str(self.layout.cert("ca"))
        cfg.cert_file = str(self.layout.cert("admin"))
        cfg.key_file = str(self.layout.key("admin"))
        cfg.verify_ssl = True
        return client.ApiClient(cfg)

    def service_account_kubeconfig(self, namespace: str, name: str, expiration_seconds: int = 3600) -> Path:
        """A kubeconfig that acts as ServiceAccount ``namespace/name`` (a bound token from the
        TokenRequest API), to run the operator or kubectl with exactly the RBAC a chart grants."""
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest"}
        body["spec"] = {"expirationSeconds": expiration_seconds}
        token = self._request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts/{name}/token", body)
        ca_pem = self.layout.cert("ca").read_bytes()
        doc = kubeconfig_doc(self.server, ca_pem, f"{namespace}-{name}", {"token": token["status"]["token"]})
        path = self.layout.root / f"sa-{namespace}-{name}.kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        path.chmod(0o600)
        return path

    def install_crds(self, paths: Iterable[Path | str], timeout: float = 60.0) -> list[CRDInfo]:
        """Server-side apply CRD files/directories (and companion admission policies) and wait
        until each CRD is Established and discovery serves all its versions. Safe to call again
        with changed CRDs; an error names the file and the object the apiserver refused."""
        infos = self._apply_crds(paths)
        self._wait_crds(infos, timeout)
        return infos

    def _apply_crds(self, paths: Iterable[Path | str]) -> list[CRDInfo]:
        return self._apply_bundles(load_crd_bundles(paths))

    def _apply_bundles(self, bundles: list[CRDBundle]) -> list[CRDInfo]:
        """Server-side apply every object in the files straight over HTTPS (no kubectl start-up
        and discovery per call); an error names the file and the object."""
        for b in bundles:
            for doc in b.docs:
                self._server_side_apply(doc, b.path)
        return [info for b in bundles for info in b.crds]

    def _server_side_apply(self, obj: dict[str, Any], source: Path) -> None:
        group, _, version = obj["apiVersion"].rpartition("/")
        plural = _INSTALLABLE.get(obj["kind"])
        if plural is None:
            kinds = ", ".join(_INSTALLABLE)
            raise ClusterError(f"{source}: cannot install a {obj['kind']} here (only {kinds})")
        name = obj["metadata"]["name"]
        path = f"/apis/{group}/{version}/{plural}/{name}?fieldManager=stt-local-cluster&force=true"
        req = urllib.request.Request(
            f"{self.server}{path}",
            data=json.dumps(obj).encode(),
            method="PATCH",
            headers={"Content-Type": "application/apply-patch+yaml"},
        )
        try:
            with urllib.request.urlopen(req, timeout=60, context=self._ssl):
                pass
        except urllib.error.HTTPError as exc:
            body = exc.read().decode(errors="replace")
            with contextlib.suppress(ValueError, KeyError):
                body = json.loads(body)["message"]
            raise ClusterError(f"installing {obj['kind']} {name} from {source} failed: {body}") from exc

    def _wait_crds(self, infos: Iterable[CRDInfo], timeout: float) -> None:
        for info in infos:
            self._wait(lambda i=info: self._crd_served(i), timeout, f"CRD {info.name} from {info.source}")

    def check_alive(self) -> None:
        """Raise if any component has exited."""
        for c in self.components:
            if not c.alive():
                raise c.failure("stopped unexpectedly")

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LocalCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> LocalCluster:
        t0 = time.monotonic()
        # Bad CRD paths or YAML fail now, not after a 15 s start-up.
        self._crd_bundles = load_crd_bundles(self.crd_paths)
        if missing := missing_tools(self.tools_dir):
            raise ClusterError(
                f"tools missing in {self.tools_dir}: {', '.join(missing)}; run hack/build-tools.sh"
            )
        if self._want_real_node and (missing := missing_node_prereqs(self.bin_dir)):
            raise ClusterError(
                f"the real node needs {', '.join(missing)}: run `make deps` and hack/build-tools.sh as root"
            )
        # Ports are free when picked but another process may bind one before our component does;
        # then start again from scratch on fresh ports.
        for attempt in range(1, 4):
            self._make_dir()
            try:
                self._start_all()
                break
            except ClusterError as exc:
                retry = attempt < 3 and "address already in use" in str(exc)
                self._abort(keep=not retry)
                if not retry:
                    raise
            except BaseException:
                self._abort(keep=False)
                raise
        self.startup_seconds = time.monotonic() - t0
        return self

    def _make_dir(self) -> None:
        if self.workdir is None:
            sweep_stale_dirs()
            root = Path(tempfile.mkdtemp(prefix=TEMP_PREFIX))
            (root / OWNER_FILE).write_text(str(os.getpid()))
            self._owns_dir = True
        else:
            root = self.workdir
            if root.exists() and any(root.iterdir()) and not (root / OWNER_FILE).exists():
                raise ClusterError(f"workdir {root}: not empty and not a previous cluster directory")
            shutil.rmtree(root, ignore_errors=True)  # a previous run's PKI and etcd data
            root.mkdir(parents=True)
            (root / OWNER_FILE).write_text(str(os.getpid()))
        self._lay = Layout(root)
        self.timings = {}

    def _abort(self, keep: bool) -> None:
        """Stop what started; keep the directory (logs) for a final failure when asked to."""
        self.keep_dir = self.keep_dir or (keep and bool(os.environ.get("STT_KEEP_CLUSTER_DIR")))
        self.stop()

    def stop(self) -> None:
        # Reverse order: the node and controllers first, etcd last, so nothing logs a storm of errors.
        for c in reversed(self.components):
            if c.name == "containerd" and self.real_node is not None:
                self.real_node.stop_containers()  # kubelet is already gone: nothing restarts them
            c.stop()
        self.components.clear()
        if self.real_node is not None:
            self.real_node.cleanup()
            self.real_node = None
        if self._lay is not None and self._owns_dir and not self.keep_dir:
            shutil.rmtree(self._lay.root, ignore_errors=True)

    # -- start-up steps --------------------------------------------------------------------

    def _start_all(self) -> None:
        lay = self.layout
        node_ip: str | None = None
        if self._want_real_node:
            self.real_node = RealNode.allocate()
            self.real_node.setup_network()
            node_ip = self.real_node.host_ip
        _write_pki(lay, self.service_cidr, [node_ip] if node_ip else [])
        self._ssl = ssl.create_default_context(cafile=str(lay.cert("ca")))
        self._ssl.load_cert_chain(str(lay.cert("admin")), str(lay.key("admin")))

        mark = time.monotonic()

        def phase(name: str) -> None:
            nonlocal mark
            now = time.monotonic()
            self.timings[name] = round(now - mark, 2)
            mark = now

        etcd_url = self._start_etcd()
        phase("etcd")
        self._start_apiserver(etcd_url)
        phase("kube-apiserver")

        ca_pem = lay.cert("ca").read_bytes()
        for user in ("admin", "kube-controller-manager", "kube-scheduler", "kwok"):
            creds = cert_credentials(lay.cert(user).read_bytes(), lay.key(user).read_bytes())
            doc = kubeconfig_doc(self.server, ca_pem, user, creds)
            lay.kubeconfig(user).write_text(yaml.safe_dump(doc))
            lay.kubeconfig(user).chmod(0o600)

        kcm_port, sched_port = free_port(), free_port()
        kcm = self._launch(
            "kube-controller-manager", controller_manager_args(lay, kcm_port, self.service_cidr)
        )
        sched = self._launch("kube-scheduler", scheduler_args(lay, sched_port))
        self._write_kwok_config()
        # kwok reads ~/.kwok/kwok.yaml if present; a private HOME keeps a person's settings out.
        kwok_env = dict(os.environ, HOME=str(lay.root))
        self._launch("kwok", kwok_args(lay), env=kwok_env)

        # While the controllers start: register the nodes and hand the CRDs to the apiserver.
        for name in self.kwok_node_names:
            self._request("POST", "/api/v1/nodes", fake_node(name, gpus=self.gpus_per_node))
        crds = self._apply_bundles(self._crd_bundles)
        phase("nodes+crds applied")

        for comp, port in ((kcm, kcm_port), (sched, sched_port)):
            url = f"https://127.0.0.1:{port}/healthz"
            self._wait(lambda u=url: self._healthy(u, verify=False), self.start_timeout, f"{comp.name} {url}")
        phase("controllers healthy")
        self._wait(self._nodes_ready, self.start_timeout, "fake nodes Ready without not-ready taints")
        phase("nodes ready")
        # Pods are rejected until the default ServiceAccount exists; wait for the controller.
        self._wait(
            lambda: self._exists("/api/v1/namespaces/default/serviceaccounts/default"),
            self.start_timeout,
            "ServiceAccount default/default",
        )
        phase("default serviceaccount")
        self._wait_crds(crds, self.start_timeout)
        phase("crds served")
        if self.real_node is not None:
            self._start_real_node(self.real_node)
            self.timings.update({f"node: {k}": v for k, v in self.real_node.timings.items()})
            phase("real node")

    def _start_real_node(self, node: RealNode) -> None:
        lay = self.layout
        port = self.server.rsplit(":", 1)[1]
        node_server = f"https://{node.host_ip}:{port}"  # the namespace reaches the host only there
        ca_pem = lay.cert("ca").read_bytes()

        def kubeconfig_for(user: str, group: str | None) -> Path:
            name = user.replace(":", "-")
            issue_client_cert(lay, name, user, group)
            doc = kubeconfig_doc(
                node_server,
                ca_pem,
                user,
                cert_credentials(lay.cert(name).read_bytes(), lay.key(name).read_bytes()),
            )
            path = lay.kubeconfig(name)
            path.write_text(yaml.safe_dump(doc))
            path.chmod(0o600)
            return path

        def launch(name: str, argv: list[str]) -> None:
            comp = Component(name, argv, lay.log(name))
            self.components.append(comp)
            comp.start()

        node.start(
            lay.root / "node",
            ca=lay.cert("ca"),
            launch=launch,
            kubeconfig_for=kubeconfig_for,
            request=self._request,
            wait=lambda ok, timeout, what: self._wait(ok, timeout, what),
            bin_dir=self.bin_dir,
            pause_tar=self.tools_dir / "images" / "pause.tar",
            gpus=self.real_node_gpus,
            timeout=self.start_timeout,
            image_cache=self.tools_dir.parent / "node-images",
        )

    def _launch(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Component:
        comp = Component(name, [str(self.bin_dir / name), *args], self.layout.log(name), env=env)
        self.components.append(comp)
        comp.start()
        return comp

    def _start_etcd(self) -> str:
        client_port, peer_port = free_port(), free_port()
        comp = self._launch("etcd", etcd_args(self.layout, client_port, peer_port))
        url = f"http://127.0.0.1:{client_port}"
        self._wait(lambda: self._etcd_healthy(url), 60, "etcd /health", only=comp)
        return url

    def _start_apiserver(self, etcd_url: str) -> None:
        port = free_port()
        self.server = f"https://127.0.0.1:{port}"
        node_ip = self.real_node.host_ip if self.real_node else None
        self._launch(
            "kube-apiserver", apiserver_args(self.layout, port, etcd_url, self.service_cidr, node_ip)
        )
        self._wait(
            lambda: self._healthy(f"{self.server}/readyz"), self.start_timeout, "kube-apiserver /readyz"
        )

    def _write_kwok_config(self) -> None:
        stage_dir = self.tools_dir / "kwok-stages"
        # The project's own stages replace kwok's where named alike (pod-complete leaves the
        # operator's Job pods to the stand-in kubelet in stt_harness.jobpods).
        own = {p.name: p for p in sorted(PROJECT_KWOK_STAGES.glob("*.yaml"))}
        docs = [(own.pop(s, None) or stage_dir / s).read_text().strip() for s in KWOK_STAGES]
        docs += [p.read_text().strip() for p in own.values()]
        self.layout.kwok_config.write_text("\n---\n".join(docs) + "\n")

    # -- probes ----------------------------------------------------------------------------

    def _wait(self, ok: Callable[[], bool], timeout: float, what: str, only: Component | None = None) -> None:
        deadline = time.monotonic() + timeout
        delay = 0.1
        last_exc: Exception | None = None
        while True:
            for c in [only] if only else self.components:
                if not c.alive():
                    raise c.failure(f"exited while waiting for {what}")
            try:
                if ok():
                    return
            except (OSError, ValueError, KeyError, ClusterError) as exc:
                last_exc = exc
            if time.monotonic() > deadline:
                culprit = only or (self.components[-1] if self.components else None)
                detail = f" (last error: {last_exc})" if last_exc else ""
                msg = f"timed out after {timeout:.0f}s waiting for {what}{detail}"
                if culprit is None:
                    raise ClusterError(msg)
                logs = "\n".join(
                    f"--- {c.name} ({c.log_path}):\n{tail(c.log_path, 15)}" for c in self.components
                )
                raise ClusterError(f"{msg}\n{logs}")
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def _etcd_healthy(self, url: str) -> bool:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as r:
            return bool(json.load(r).get("health") == "true")

    def _healthy(self, url: str, verify: bool = True) -> bool:
        ctx = self._ssl if verify else ssl._create_unverified_context()  # self-signed serving certs
        try:
            with urllib.request.urlopen(url, timeout=5, context=ctx) as r:
                return r.status == 200
        except urllib.error.HTTPError:
            return False

    def _request(
        self, method: str, path: str, body: Any = None, content_type: str = "application/json"
    ) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            f"{self.server}{path}", data=data, method=method, headers={"Content-Type": content_type}
        )
        try:
            with urllib.request.urlopen(req, timeout=30, context=self._ssl) as r:
                return dict(json.load(r))
        except urllib.error.HTTPError as exc:
            raise ClusterError(
                f"{method} {path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}"
            ) from exc

    def _exists(self, path: str) -> bool:
        try:
            self._request("GET", path)
            return True
        except ClusterError as exc:
            if "HTTP 404" in str(exc):
                return False
            raise

    def _nodes_ready(self) -> bool:
        items = {n["metadata"]["name"]: n for n in self._request("GET", "/api/v1/nodes")["items"]}
        for name in self.kwok_node_names:
            node = items.get(name)
            if node is None:
                return False
            conds = {c["type"]: c["status"] for c in node.get("status", {}).get("conditions", [])}
            taints = node.get("spec", {}).get("taints") or []
            if conds.get("Ready") != "True" or any(
                t["key"].startswith("node.kubernetes.io/") for t in taints
            ):
                return False
        return True

    def _crd_served(self, info: CRDInfo) -> bool:
        crd = self._request("GET", f"/apis/apiextensions.k8s.io/v1/customresourcedefinitions/{info.name}")
        conds = {c["type"]: c["status"] for c in (crd.get("status") or {}).get("conditions") or []}
        if conds.get("Established") != "True":
            return False
        for version in info.versions:
            try:
                disc = self._request("GET", f"/apis/{info.group}/{version}")
            except ClusterError:
                return False
            if info.plural not in {r["name"] for r in disc.get("resources", [])}:
                return False
        return True


# --------------------------------------------------------------------------------------------
# Tools and the command line.
# --------------------------------------------------------------------------------------------


def ensure_tools(tools_dir: Path | None = None) -> Path:
    """Run hack/build-tools.sh (idempotent, well under a second when nothing changed) so pinned
    versions and binaries never drift; returns the tools dir.

    Without Go or a checkout, existing binaries are used as they are. Fails loudly
    (ClusterError with the script's output) when tools are missing and cannot be built.
    """
    tools_dir = tools_dir or default_tools_dir()
    root = repo_root()
    if root is None or shutil.which("go") is None:
        if missing := missing_tools(tools_dir):
            raise ClusterError(
                f"tools missing in {tools_dir} ({', '.join(missing)}) and "
                + ("no checkout with hack/build-tools.sh" if root is None else "no `go` on PATH")
                + " to build them"
            )
        return tools_dir
    env = dict(os.environ, STT_TOOLS_DIR=str(tools_dir))
    res = subprocess.run(
        ["bash", str(root / "hack" / "build-tools.sh")], env=env, capture_output=True, text=True
    )
    if res.returncode != 0:
        out = "\n".join((res.stdout + res.stderr).splitlines()[-40:])
        raise ClusterError(f"hack/build-tools.sh failed ({res.returncode}):\n{out}")
    if missing := missing_tools(tools_dir):
        raise ClusterError(f"hack/build-tools.sh succeeded but {', '.join(missing)} are still missing")
    return tools_dir


def default_crd_paths(tools_dir: Path, root: Path | None) -> list[Path]:
    """This project's CRDs (if generated yet) and the third-party CRDs the operator writes to."""
    paths: list[Path] = []
    if root is not None and (root / "crds").is_dir() and crd_files([root / "crds"]):
        paths.append(root / "crds")
    for extra in ("gateway-api", "prometheus-operator"):
        if (tools_dir / "crds" / extra).is_dir():
            paths.append(tools_dir / "crds" / extra)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m stt_harness.cluster",
        description="Start a real local Kubernetes control plane with fake GPU nodes until Ctrl-C.",
    )
    ap.add_argument("--nodes", type=int, default=2, help="fake GPU nodes (default 2)")
    ap.add_argument("--gpus-per-node", type=int, default=4, help="nvidia.com/gpu per node (default 4)")
    ap.add_argument(
        "--crds",
        nargs="+",
        default=[],
        type=Path,
        metavar="PATH",
        help="more CRD files/directories to install, besides the defaults",
    )
    ap.add_argument(
        "--no-default-crds",
        action="store_true",
        help="skip the defaults: this checkout's crds/, Gateway API, Prometheus Operator CRDs",
    )
    ap.add_argument(
        "--real-node",
        action="store_true",
        help="also start a real node (kubelet, containerd, kube-proxy, CoreDNS; root + `make deps`)",
    )
    ap.add_argument(
        "--gateway",
        action="store_true",
        help="also run Traefik (Gateway API data plane), Gateway stt-gateway in `default`; needs --real-node",
    )
    ap.add_argument(
        "--prometheus-operator",
        action="store_true",
        help="also run the Prometheus Operator and its Prometheus on the real node; needs --real-node",
    )
    ap.add_argument("--tools-dir", type=Path, default=None, help="default: $STT_TOOLS_DIR or ~/.cache/...")
    ap.add_argument(
        "--workdir",
        type=Path,
        default=None,
        help="put the cluster's files here (kept on exit) instead of a temp dir",
    )
    args = ap.parse_args(argv)
    if args.nodes < 0:
        ap.error("--nodes must be >= 0")
    if args.gpus_per_node < 0:
        ap.error("--gpus-per-node must be >= 0")
    if (args.gateway or args.prometheus_operator) and not args.real_node:
        ap.error("--gateway and --prometheus-operator need --real-node (their backends run there)")

    try:
        tools_dir = ensure_tools(args.tools_dir)
        crds = [] if args.no_default_crds else default_crd_paths(tools_dir, repo_root())
        crds += [p for p in args.crds if p.resolve() not in {c.resolve() for c in crds}]
        cluster = LocalCluster(
            nodes=args.nodes,
            gpus_per_node=args.gpus_per_node,
            crd_paths=crds,
            tools_dir=tools_dir,
            workdir=args.workdir,
            real_node=args.real_node,
        )
        stop = False

        def on_signal(signum: int, _frame: object) -> None:
            nonlocal stop
            stop = True

        with cluster, contextlib.ExitStack() as extras:
            # Ctrl-C during start-up raises KeyboardInterrupt, which stops what had started.
            signal.signal(signal.SIGTERM, on_signal)
            signal.signal(signal.SIGINT, on_signal)
            print(f"cluster ready in {cluster.startup_seconds:.1f}s: {cluster.server}", flush=True)
            print(f"kubeconfig: {cluster.kubeconfig}")
            print(f"export KUBECONFIG={cluster.kubeconfig}")
            print(f"export PATH={cluster.bin_dir}:$PATH")
            if node := cluster.real_node:
                print(
                    f"real node {node.name}: pods {node.pod_cidr}, Services {node.service_cidr}, "
                    f"containerd {node.containerd_socket} (ctr -n k8s.io); pods tolerate "
                    "stt.dev/real-node and select stt.dev/node=real",
                    flush=True,
                )
            if args.gateway:
                from stt_harness.gateway import GATEWAY_NAME, running_gateway

                gw = extras.enter_context(running_gateway(cluster, cluster.layout.root / "traefik"))
                gw.create_gateway("default")
                print(
                    f"gateway: Traefik at {gw.url} (Gateway default/{GATEWAY_NAME}; log {gw.log_path})",
                    flush=True,
                )
            if args.prometheus_operator:
                from stt_harness.promoperator import running_prometheus_operator

                prom = extras.enter_context(
                    running_prometheus_operator(cluster, cluster.layout.root / "prom-op")
                )
                print(f"prometheus: {prom.url} (Prometheus Operator log {prom.log_path})", flush=True)
            print(f"logs: {cluster.layout.root / 'logs'}   (Ctrl-C to stop)", flush=True)
            while not stop:
                cluster.check_alive()
                time.sleep(0.5)
            print("stopping…", flush=True)
    except ClusterError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
