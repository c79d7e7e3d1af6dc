"""Integrity: a sha256 manifest of every file, the pinned digest, and an optional signature.

The pinned `source.sha256` is the digest of what was downloaded (the model file or the
archive); for a directory source it is the manifest digest, the sha256 of the manifest's
canonical `sha256sum`-style text. Signatures are verified offline with a public key by the
OpenSSF `model-signing` library (a sigstore bundle over the model directory's own manifest).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from stt_operator.artifacts.report import WAIVER_DIGEST_NOT_PINNED, FileDigest, StepResult

CHUNK = 1024 * 1024


@dataclass(frozen=True)
class Manifest:
    files: tuple[FileDigest, ...]

    @property
    def total_bytes(self) -> int:
        return sum(f.size_bytes or 0 for f in self.files)

    def canonical_text(self) -> str:
        return "".join(f"{f.sha256}  {f.path}\n" for f in self.files)

    @property
    def digest(self) -> str:
        return hashlib.sha256(self.canonical_text().encode()).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def build_manifest(root: str | Path, ignore: tuple[str, ...] = ()) -> Manifest:
    """Digest every regular file under `root` (or `root` itself), sorted by relative path.

    Symlinks are not followed: a link is listed with the digest of its target *text*, so a
    manifest never reads outside the tree and a changed link still changes the digest.
    """
    root = Path(root)
    if root.is_file() and not root.is_symlink():
        return Manifest(
            (FileDigest(path=root.name, sha256=sha256_file(root), size_bytes=root.stat().st_size),)
        )
    entries: list[FileDigest] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        dirnames.sort()
        base = Path(dirpath)
        for name in [*filenames, *(d for d in dirnames if (base / d).is_symlink())]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            if rel in ignore:
                continue
            if path.is_symlink():
                target = os.readlink(path)
                entries.append(
                    FileDigest(path=rel, sha256=hashlib.sha256(b"symlink:" + target.encode()).hexdigest())
                )
            elif path.is_file():
                entries.append(FileDigest(path=rel, sha256=sha256_file(path), size_bytes=path.stat().st_size))
    entries.sort(key=lambda f: f.path)
    return Manifest(tuple(entries))


def check_pinned_digest(actual: str, pinned: str | None, what: str) -> StepResult:
    if not pinned:
        return StepResult.skipped(
            "integrity", f"no source.sha256 pinned; {what} has sha256 {actual} (pin it to enforce integrity)"
        )
    if actual.lower() != pinned.lower():
        return StepResult.failed(
            "integrity",
            f"sha256 mismatch: {what} is {actual}, source.sha256 pins {pinned.lower()}",
            findings=[f"digest {actual} != pinned {pinned.lower()}"],
        )
    return StepResult.passed("integrity", f"sha256 {actual} matches source.sha256")


def verify_signature(model_path: Path, signature_path: Path, public_key_path: Path) -> str | None:
    """None when the signature verifies, else the reason. Offline: a key, no transparency log.

    Uses OpenSSF model signing (`model_signing`), elliptic-curve key verifier; the signature
    file itself is ignored when it lies inside the model directory.
    """
    try:
        import model_signing
    except ImportError as exc:  # the `security` extra is not installed
        return f"model-signing is not installed ({exc}); cannot verify {signature_path.name}"
    for label, path in (("signature", signature_path), ("public key", public_key_path)):
        if not path.is_file():
            return f"{label} file {path} does not exist"
    hashing = model_signing.hashing.Config()
    if signature_path.resolve().is_relative_to(model_path.resolve()):
        hashing = hashing.set_ignored_paths(paths=[signature_path.resolve()])
    config = model_signing.verifying.Config().set_hashing_config(hashing)
    try:
        config.use_elliptic_key_verifier(public_key=public_key_path).verify(model_path, signature_path)
    except Exception as exc:  # the library raises ValueError and others; all mean "not verified"
        return f"signature {signature_path.name} does not verify: {_short(str(exc))}"
    return None


def _short(text: str, width: int = 300) -> str:
    return text if len(text) <= width else text[:width] + "…"


def integrity_step(
    model_path: Path,
    fetched_digest: str,
    pinned: str | None,
    what: str,
    signature_path: Path | None = None,
    public_key_path: Path | None = None,
) -> tuple[StepResult, Manifest]:
    """Step 5: the pinned digest, then the signature when one is configured."""
    manifest = build_manifest(model_path)
    digest_result = check_pinned_digest(fetched_digest, pinned, what)
    details = {"manifestDigest": manifest.digest, "files": len(manifest.files)}
    if digest_result.result == "skipped":
        # The step still ran (manifest, signature); only the pin check is waived, and says so.
        digest_result = StepResult.passed(
            "integrity",
            f"manifest of {len(manifest.files)} file(s) computed; digest check waived "
            f"({WAIVER_DIGEST_NOT_PINNED}): {digest_result.message}",
            waiver=WAIVER_DIGEST_NOT_PINNED,
        )
    if digest_result.result == "failed":
        digest_result.details.update(details)
        return digest_result, manifest
    if signature_path is None or public_key_path is None:
        digest_result.details.update(details)
        if digest_result.result == "passed":
            digest_result.message += "; no signature configured"
        return digest_result, manifest
    reason = verify_signature(model_path, signature_path, public_key_path)
    if reason:
        return StepResult.failed("integrity", reason, findings=[reason], **details), manifest
    message = f"{digest_result.message}; OpenSSF model signature verified with the public key"
    waiver = digest_result.details.get("waiver")
    if waiver:
        message = (
            f"signature verified with the public key ({len(manifest.files)} files); "
            f"no source.sha256 pinned (waived: {waiver})"
        )
        details["waiver"] = waiver
    return StepResult.passed("integrity", message, **details), manifest
