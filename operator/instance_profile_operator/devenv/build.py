"""Build the local cluster's binaries from pinned Go sources, in bundles cached by version:
the control plane (kube-apiserver, kubectl, etcd) and kube-controller-manager, which every
dev environment runs, and a node's (kube-scheduler, kubelet, containerd 2.x, its shim, ctr).

No prebuilt binary can be downloaded here, so each one is compiled from the Go module
proxy through a small generated wrapper module:

* ``k8s.io/kubernetes`` requires its staging repos at ``v0.0.0`` and points them at
  ``./staging`` with replace directives that mean nothing to a dependent module. The
  wrapper replaces each of them with the published ``v0.X.Y``; the list is read from the
  downloaded ``go.mod``, never typed by hand.
* etcd's own ``replace`` directives likewise stop ``go install …@v`` from working, so it
  is built as a dependency of a second wrapper module; containerd the same way.

Go's module and build caches and the binaries live in a per-user cache directory keyed by
the pinned versions, so any checkout on the machine reuses them.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"
CONTAINERD_VERSION = "v2.2.1"
# containerd's optional snapshotters need C libraries (CGO is off); the CLI needs no docs.
CONTAINERD_BUILD_TAGS = "no_btrfs no_devmapper no_zfs urfave_cli_no_docs"


def cache_root() -> Path:
    """The per-user cache directory shared by every checkout on this machine."""
    explicit = os.environ.get("IPO_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "instance-profile-operator"


@dataclass(frozen=True)
class GoEnv:
    """Environment for every ``go`` invocation: caches outside the checkout."""

    root: Path

    def variables(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            GOMODCACHE=str(self.root / "go" / "mod"),
            GOCACHE=str(self.root / "go" / "build"),
            GOFLAGS="-mod=mod -buildvcs=false -trimpath",
            CGO_ENABLED="0",
            GOTOOLCHAIN="local",
        )
        return env


def _go(args: list[str], cwd: Path, env: GoEnv) -> str:
    print("+ go " + " ".join(args), flush=True)
    done = subprocess.run(
        ["go", *args], cwd=cwd, env=env.variables(), check=True, text=True, stdout=subprocess.PIPE
    )
    return done.stdout


def staging_replacements(kubernetes_go_mod: str, kubernetes_version: str) -> dict[str, str]:
    """Map each ``k8s.io/*`` module required at v0.0.0 to its published ``v0.X.Y``."""
    match = re.fullmatch(r"v1\.(\d+)\.(\d+)", kubernetes_version)
    if not match:
        raise ValueError(f"not a Kubernetes release: {kubernetes_version}")
    staging_version = f"v0.{match[1]}.{match[2]}"
    staged = re.findall(r"^\s*(k8s\.io/[\w./-]+)\s+v0\.0\.0(?:\s*//.*)?$", kubernetes_go_mod, re.MULTILINE)
    return {module: staging_version for module in sorted(set(staged))}


def _write_module(directory: Path, name: str, requires: dict[str, str], replaces: dict[str, str]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    lines = [f"module {name}", "", "go 1.26", "", "require ("]
    lines += [f"\t{module} {version}" for module, version in requires.items()]
    lines.append(")")
    if replaces:
        lines += ["", "replace ("]
        lines += [f"\t{module} => {module} {version}" for module, version in replaces.items()]
        lines.append(")")
    (directory / "go.mod").write_text("\n".join(lines) + "\n")


def _version_ldflags(kubernetes_version: str) -> str:
    major, minor = kubernetes_version.lstrip("v").split(".")[:2]
    values = {
        "gitVersion": kubernetes_version,
        "gitMajor": major,
        "gitMinor": minor,
        "gitTreeState": "clean",
        "buildDate": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    packages = ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version")
    flags = [f"-X {package}.{key}={value}" for package in packages for key, value in values.items()]
    return " ".join(["-s -w", *flags])


def build_kubernetes(env: GoEnv, work: Path, out: Path, commands: list[str]) -> None:
    """``k8s.io/kubernetes/cmd/<command>`` for each command, through one wrapper module."""
    module = work / "kubernetes"
    _write_module(module, "local/ipo-kubernetes-build", {"k8s.io/kubernetes": KUBERNETES_VERSION}, {})
    info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], module, env))
    replaces = staging_replacements(Path(info["GoMod"]).read_text(), KUBERNETES_VERSION)
    _write_module(module, "local/ipo-kubernetes-build", {"k8s.io/kubernetes": KUBERNETES_VERSION}, replaces)
    ldflags = _version_ldflags(KUBERNETES_VERSION)
    for command in commands:
        _go(["build", "-ldflags", ldflags, "-o", str(out / command), f"k8s.io/kubernetes/cmd/{command}"], module, env)


def build_etcd(env: GoEnv, work: Path, out: Path) -> None:
    module = work / "etcd"
    _write_module(module, "local/ipo-etcd-build", {"go.etcd.io/etcd/server/v3": ETCD_VERSION}, {})
    _go(["build", "-ldflags", "-s -w", "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"], module, env)


def build_containerd(env: GoEnv, work: Path, out: Path, commands: list[str]) -> None:
    """containerd 2.x, its runc shim and ``ctr``, as dependencies of a wrapper module."""
    module = work / "containerd"
    _write_module(module, "local/ipo-containerd-build", {"github.com/containerd/containerd/v2": CONTAINERD_VERSION}, {})
    ldflags = f"-s -w -X github.com/containerd/containerd/v2/version.Version={CONTAINERD_VERSION}"
    for command in commands:
        _go(["build", "-tags", CONTAINERD_BUILD_TAGS, "-ldflags", ldflags, "-o", str(out / command),
             f"github.com/containerd/containerd/v2/cmd/{command}"], module, env)


def _build_control_plane(env: GoEnv, work: Path, out: Path, missing: list[str]) -> None:
    commands = [name for name in missing if name != "etcd"]
    if commands:
        build_kubernetes(env, work, out, commands)
    if "etcd" in missing:
        build_etcd(env, work, out)


def _build_node(env: GoEnv, work: Path, out: Path, missing: list[str]) -> None:
    commands = [name for name in missing if name.startswith("kube")]
    if commands:
        build_kubernetes(env, work, out, commands)
    runtime = [name for name in missing if not name.startswith("kube")]
    if runtime:
        build_containerd(env, work, out, runtime)


@dataclass(frozen=True)
class Bundle:
    """Binaries built together, cached in one directory named by the versions that pin them."""

    directory: str
    binaries: tuple[str, ...]
    builder: Callable[[GoEnv, Path, Path, list[str]], None]

    def bin_dir(self) -> Path:
        return cache_root() / self.directory / "bin"

    def missing(self) -> list[str]:
        return [name for name in self.binaries if not os.access(self.bin_dir() / name, os.X_OK)]


CONTROL_PLANE = Bundle(f"controlplane-k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}",
                       ("kube-apiserver", "kubectl", "etcd"), _build_control_plane)
CONTROLLER_MANAGER = Bundle(f"controller-manager-k8s-{KUBERNETES_VERSION}",
                            ("kube-controller-manager",), build_kubernetes)
NODE = Bundle(f"node-k8s-{KUBERNETES_VERSION}-containerd-{CONTAINERD_VERSION}",
              ("kube-scheduler", "kubelet", "containerd", "containerd-shim-runc-v2", "ctr"), _build_node)
# Every dev environment runs the first two; ``up --node`` the third.
EVERY_ENVIRONMENT = (CONTROL_PLANE, CONTROLLER_MANAGER)


def bin_dir() -> Path:
    """Where kubectl and the control plane of the pinned versions live."""
    return CONTROL_PLANE.bin_dir()


def ensure_bundle(bundle: Bundle, force: bool = False) -> Path:
    """Build whatever binary of ``bundle`` is missing; return their directory. A lock on the
    bundle's directory lets concurrent callers (parallel test sessions) build it once."""
    out = bundle.bin_dir()
    if not force and not bundle.missing():
        return out
    if shutil.which("go") is None:
        raise SystemExit("Go is required to build the local cluster (https://go.dev/dl/).")
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out.parent / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        missing = list(bundle.binaries) if force else bundle.missing()
        if not missing:
            return out
        staging = out.parent / "bin.partial"
        staging.mkdir(exist_ok=True)
        started = time.monotonic()
        bundle.builder(GoEnv(cache_root()), out.parent / "src", staging, missing)
        out.mkdir(exist_ok=True)
        for built in staging.iterdir():
            built.replace(out / built.name)
        staging.rmdir()
    print(f"built {', '.join(missing)} in {time.monotonic() - started:.0f} s into {out}", flush=True)
    return out


def ensure_built(force: bool = False, node: bool = False) -> Path:
    """Build what a dev environment runs (with ``node``, a node's too); return kubectl's directory."""
    for bundle in (*EVERY_ENVIRONMENT, *((NODE,) if node else ())):
        ensure_bundle(bundle, force)
    return bin_dir()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the binaries exist")
    parser.add_argument("--node", action="store_true", help="also build a node's binaries (kubelet, containerd...)")
    args = parser.parse_args(argv)
    print(ensure_built(force=args.force, node=args.node))
    return 0


if __name__ == "__main__":
    sys.exit(main())
