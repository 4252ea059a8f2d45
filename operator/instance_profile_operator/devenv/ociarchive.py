"""One-layer OCI image archives written directly, for images that hold a single static binary
(the dev node's pause image, its test pods' image): no registry, no builder, and a tag named by
the binary's content, so an unchanged binary makes the same image."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path


def _blob(archive: tarfile.TarFile, data: bytes) -> str:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    _add(archive, f"blobs/sha256/{digest.removeprefix('sha256:')}", data)
    return digest


def _add(archive: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), mode
    archive.addfile(info, io.BytesIO(data))


def reference(repository: str, binary: Path) -> str:
    """``repository:TAG``, the tag a digest of the binary."""
    return f"{repository}:{hashlib.sha256(binary.read_bytes()).hexdigest()[:16]}"


def write(path: Path, image: str, binary: Path, entrypoint: list[str]) -> None:
    """An OCI image layout archive of ``image`` whose only file is ``binary`` at ``/NAME``,
    importable with ``ctr images import``."""
    layer = io.BytesIO()
    with tarfile.open(fileobj=layer, mode="w") as files:
        _add(files, binary.name, binary.read_bytes(), mode=0o755)
    with tarfile.open(path, "w") as archive:
        layer_digest = _blob(archive, layer.getvalue())
        config = json.dumps({
            "architecture": "amd64", "os": "linux",
            "config": {"Entrypoint": entrypoint},
            "rootfs": {"type": "layers", "diff_ids": [layer_digest]},
        }).encode()
        config_digest = _blob(archive, config)
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest,
                       "size": len(config)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer_digest,
                        "size": len(layer.getvalue())}],
        }).encode()
        manifest_digest = _blob(archive, manifest)
        _add(archive, "oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode())
        _add(archive, "index.json", json.dumps({
            "schemaVersion": 2,
            "manifests": [{
                "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
                "size": len(manifest),
                "annotations": {"io.containerd.image.name": image, "org.opencontainers.image.ref.name": image},
            }],
        }).encode())
