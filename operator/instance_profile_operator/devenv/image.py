"""Build the operator's image with buildah, daemonless, from the repository's Dockerfile.

Three things are built, each cached under the per-user cache directory and keyed by what
it is made of, so a second build with nothing changed only looks the image up:

* the base: Debian's ``python3`` and ``ca-certificates`` and nothing else (no apt, no
  pip), made by ``mmdebstrap`` from Debian's packages and imported into buildah;
* the wheelhouse: the runtime dependencies at the versions ``constraints.txt`` pins, plus
  pip's own wheel, fetched on the host, because a build container cannot reach the
  package index here; the operator's wheel is added fresh, built from a copy of the source;
* the image: ``buildah bud`` with the base passed as the Dockerfile's ``BASE`` argument.

buildah keeps its images in the cache too (vfs driver, which works anywhere), so its
commands need ``storage_options()``: ``buildah <options> images`` lists them.

``load --dir D`` imports the image into the containerd of the node of ``devenv up --dir D --node``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .build import cache_root
from .cluster import Endpoints
from .node import Node

REPO = Path(__file__).resolve().parents[3]
IMAGE = "localhost/instance-profile-operator"
BASE_IMAGE = "localhost/instance-profile-operator-base"
DEBIAN_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "ca-certificates")
# Recommends and documentation add nothing an operator runs; the merged-/usr hook spares the
# usrmerge package, which would pull in Perl.
MMDEBSTRAP_OPTIONS = (
    "--variant=essential",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    '--aptopt=APT::Install-Recommends "false"',
    *(f"--dpkgopt=path-exclude=/usr/share/{folder}/*" for folder in ("doc", "man", "info", "locale")),
)
BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Sources that end up in the operator's wheel: a change to any of them means a new image.
WHEEL_INPUTS = ("pyproject.toml", "README.md")
PACKAGE = "operator/instance_profile_operator"
EXCLUDED_PACKAGE = "devenv"


def storage_options() -> list[str]:
    root = cache_root() / "containers"
    return ["--storage-driver", "vfs", "--root", str(root / "storage"), "--runroot", str(root / "run")]


def buildah(*args: str) -> str:
    done = subprocess.run(["buildah", *storage_options(), *args], check=True, text=True, stdout=subprocess.PIPE)
    return done.stdout.strip()


def digest(*parts: str | bytes) -> str:
    """A short key naming what a cached artefact is made of."""
    hasher = hashlib.sha256()
    for part in parts:
        hasher.update(part.encode() if isinstance(part, str) else part)
        hasher.update(b"\0")
    return hasher.hexdigest()[:16]


def exists(reference: str) -> bool:
    done = subprocess.run(["buildah", *storage_options(), "inspect", "--type", "image", reference],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return done.returncode == 0


def image_size(reference: str) -> str:
    """The uncompressed size, as ``buildah images`` shows it (e.g. ``290 MB``)."""
    return buildah("images", "--format", "{{.Size}}", reference).splitlines()[0]


def ensure_base() -> str:
    """The Debian base image, made by mmdebstrap unless this package list's is stored."""
    reference = f"{BASE_IMAGE}:{DEBIAN_SUITE}-{digest(*BASE_PACKAGES, *MMDEBSTRAP_OPTIONS)}"
    if exists(reference):
        return reference
    with tempfile.TemporaryDirectory(dir=_work_dir()) as work:
        rootfs = Path(work) / "rootfs.tar"
        _run(["mmdebstrap", *MMDEBSTRAP_OPTIONS, f"--include={','.join(BASE_PACKAGES)}", DEBIAN_SUITE, str(rootfs)])
        container = buildah("from", "scratch")
        try:
            buildah("add", container, str(rootfs), "/")
            buildah("config", "--env", f"PATH={BASE_PATH}", "--cmd", "python3", container)
            buildah("commit", "--quiet", container, reference)
        finally:
            buildah("rm", container)
    return reference


def runtime_requirements(pyproject: str) -> list[str]:
    return list(tomllib.loads(pyproject)["project"]["dependencies"])


def pip_requirement(constraints: str) -> str:
    """pip is no dependency of the operator, but the Dockerfile runs pip from its wheel."""
    [pin] = [line for line in constraints.splitlines() if line.startswith("pip==")]
    return pin


def ensure_dependency_wheels() -> Path:
    """Wheels of the runtime dependencies and pip, as pinned; fetched once per pin set."""
    constraints = (REPO / "constraints.txt").read_text()
    requirements = [*runtime_requirements((REPO / "pyproject.toml").read_text()), pip_requirement(constraints)]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    directory = cache_root() / "wheelhouse" / f"{tag}-{digest(constraints, *requirements)}"
    if directory.is_dir():
        return directory
    partial = directory.with_name(directory.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check",
          "--constraint", str(REPO / "constraints.txt"), "--wheel-dir", str(partial), *requirements])
    partial.replace(directory)
    return directory


def source_files() -> list[Path]:
    """The files the operator's wheel is built from: its package without the devenv."""
    package = REPO / PACKAGE
    modules = sorted(path for path in package.rglob("*.py")
                     if path.relative_to(package).parts[0] != EXCLUDED_PACKAGE)
    return [*(REPO / name for name in WHEEL_INPUTS), *modules]


def build_operator_wheel(into: Path) -> None:
    """Build from a copy, so that no stale build/ folder of the checkout leaks into the wheel."""
    with tempfile.TemporaryDirectory(dir=_work_dir()) as work:
        for path in source_files():
            copy = Path(work) / path.relative_to(REPO)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, copy)
        _run([sys.executable, "-m", "pip", "wheel", "--quiet", "--disable-pip-version-check", "--no-deps",
              "--wheel-dir", str(into), work])


@dataclass(frozen=True)
class Image:
    reference: str
    base: str
    built: bool
    seconds: float

    def report(self) -> str:
        action = f"built in {self.seconds:.0f} s" if self.built else f"up to date ({self.seconds:.1f} s)"
        return (f"{self.reference}: {image_size(self.reference)}, {action}; "
                f"base {self.base}: {image_size(self.base)}\n"
                f"buildah options for its storage: {' '.join(storage_options())}")


def ensure_image(force: bool = False) -> Image:
    """The image of the checkout's operator, built unless one of the same inputs is stored."""
    started = time.monotonic()
    base = ensure_base()
    wheels = ensure_dependency_wheels()
    dockerfile = REPO / "Dockerfile"
    key = digest(base, wheels.name, dockerfile.read_bytes(),
                 *(part for path in source_files() for part in (str(path.relative_to(REPO)), path.read_bytes())))
    reference = f"{IMAGE}:{key}"
    if exists(reference) and not force:
        return Image(reference, base, built=False, seconds=time.monotonic() - started)
    with tempfile.TemporaryDirectory(dir=_work_dir()) as context:
        wheelhouse = Path(context) / "wheelhouse"
        shutil.copytree(wheels, wheelhouse)
        build_operator_wheel(wheelhouse)
        _run(["nice", "-n", "10", "buildah", *storage_options(), "bud", "--isolation", "chroot", "--quiet",
              "--build-arg", f"BASE={base}", "--file", str(dockerfile), "--tag", reference, "--tag", f"{IMAGE}:dev",
              context])
    _forget_other_builds(keep=reference)
    return Image(reference, base, built=True, seconds=time.monotonic() - started)


def load(directory: Path) -> str:
    """Import the image of the checkout (built unless up to date, as ``make image`` does) into
    the runtime of the node of the environment in ``directory``; return its reference."""
    if not Endpoints.load(directory.resolve()).node:
        raise SystemExit(f"no node runs in {directory}: start one with devenv up --dir {directory} --node")
    reference = ensure_image().reference
    with tempfile.TemporaryDirectory(dir=_work_dir()) as work:
        archive = Path(work) / "image.tar"
        buildah("push", "--quiet", reference, f"docker-archive:{archive}:{reference}")
        Node(directory.resolve()).ctr("images", "import", str(archive))
    return reference


def _forget_other_builds(keep: str) -> None:
    """Each build stores a full copy of the image (vfs): keep only the newest, and any older
    one a container still uses (``rmi`` refuses those)."""
    for image in json.loads(buildah("images", "--json")):
        names = image["names"] or []
        if any(name.startswith(f"{IMAGE}:") for name in names) and keep not in names:
            subprocess.run(["buildah", *storage_options(), "rmi", image["id"]],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    buildah("rmi", "--prune")


def _work_dir() -> Path:
    directory = cache_root() / "tmp"
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def _run(command: list[str]) -> None:
    print("+ " + " ".join(command), flush=True)
    subprocess.run(command, check=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    build = commands.add_parser("build", help="build the image unless it is up to date; print its size")
    build.add_argument("--force", action="store_true", help="rebuild even if an image of the same inputs exists")
    loader = commands.add_parser("load", help="import it into the node of devenv up --node; print its reference last")
    loader.add_argument("--dir", type=Path, required=True, help="the environment's directory")
    args = parser.parse_args(argv)
    if args.command == "load":
        print(load(args.dir))
        return 0
    print(ensure_image(force=args.force).report())
    return 0


if __name__ == "__main__":
    sys.exit(main())
