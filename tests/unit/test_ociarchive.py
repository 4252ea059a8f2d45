"""ociarchive.write(): an OCI image layout whose index names the image, whose blobs match their
digests, and whose one layer holds the binary, executable, at the root."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from pathlib import Path

from instance_profile_operator.devenv import ociarchive


def _members(path: Path) -> dict[str, bytes]:
    with tarfile.open(path) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def _blob(members: dict[str, bytes], digest: str) -> bytes:
    data = members[f"blobs/sha256/{digest.removeprefix('sha256:')}"]
    assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
    return data


def test_archive_is_an_oci_layout_of_one_layer_holding_the_binary(tmp_path: Path):
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    image = ociarchive.reference("localhost/ipo-pause", binary)
    ociarchive.write(tmp_path / "image.tar", image, binary, ["/pause"])

    members = _members(tmp_path / "image.tar")
    assert json.loads(members["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    [entry] = json.loads(members["index.json"])["manifests"]
    assert entry["annotations"] == {"io.containerd.image.name": image, "org.opencontainers.image.ref.name": image}
    manifest = json.loads(_blob(members, entry["digest"]))
    config = json.loads(_blob(members, manifest["config"]["digest"]))
    assert config["config"]["Entrypoint"] == ["/pause"]
    [layer] = manifest["layers"]
    assert config["rootfs"]["diff_ids"] == [layer["digest"]]  # uncompressed: the layer is its own diff
    with tarfile.open(fileobj=io.BytesIO(_blob(members, layer["digest"]))) as files:
        [member] = files.getmembers()
        assert (member.name, member.mode) == ("pause", 0o755)
        assert files.extractfile(member).read() == binary.read_bytes()


def test_the_tag_follows_the_binary(tmp_path: Path):
    binary = tmp_path / "pause"
    binary.write_bytes(b"one")
    first = ociarchive.reference("localhost/ipo-pause", binary)
    assert first == ociarchive.reference("localhost/ipo-pause", binary)
    binary.write_bytes(b"two")
    assert ociarchive.reference("localhost/ipo-pause", binary) != first
