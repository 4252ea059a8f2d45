"""Build the local control plane (kube-apiserver, kubectl, etcd) from pinned Go sources.

No prebuilt binary can be downloaded here, so each one is compiled from the Go module
proxy through a small generated wrapper module:

* ``k8s.io/kubernetes`` requires its staging repos at ``v0.0.0`` and points them at
  ``./staging`` with replace directives that mean nothing to a dependent module. The
  wrapper replaces each of them with the published ``v0.X.Y``; the list is read from the
  downloaded ``go.mod``, never typed by hand.
* etcd's own ``replace`` directives likewise stop ``go install …@v`` from working, so it
  is built as a dependency of a second wrapper module.

Go's module and build caches and the binaries live in a per-user cache directory keyed by
the pinned versions, so any checkout on the machine reuses them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

KUBERNETES_VERSION = "v1.36.3"
ETCD_VERSION = "v3.6.8"

BINARIES = ("kube-apiserver", "kubectl", "etcd")


def cache_root() -> Path:
    """The per-user cache directory shared by every checkout on this machine."""
    explicit = os.environ.get("IPO_CACHE_DIR")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "instance-profile-operator"


def bin_dir() -> Path:
    """Where the binaries of the pinned versions live."""
    return cache_root() / f"controlplane-k8s-{KUBERNETES_VERSION}-etcd-{ETCD_VERSION}" / "bin"


def binary(name: str) -> Path:
    return bin_dir() / name


def missing_binaries() -> list[str]:
    return [name for name in BINARIES if not os.access(binary(name), os.X_OK)]


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


def build_kubernetes(env: GoEnv, work: Path, out: Path) -> None:
    module = work / "kubernetes"
    _write_module(module, "local/ipo-kubernetes-build", {"k8s.io/kubernetes": KUBERNETES_VERSION}, {})
    info = json.loads(_go(["mod", "download", "-json", f"k8s.io/kubernetes@{KUBERNETES_VERSION}"], module, env))
    replaces = staging_replacements(Path(info["GoMod"]).read_text(), KUBERNETES_VERSION)
    _write_module(module, "local/ipo-kubernetes-build", {"k8s.io/kubernetes": KUBERNETES_VERSION}, replaces)
    ldflags = _version_ldflags(KUBERNETES_VERSION)
    for command in ("kube-apiserver", "kubectl"):
        _go(["build", "-ldflags", ldflags, "-o", str(out / command), f"k8s.io/kubernetes/cmd/{command}"], module, env)


def build_etcd(env: GoEnv, work: Path, out: Path) -> None:
    module = work / "etcd"
    _write_module(module, "local/ipo-etcd-build", {"go.etcd.io/etcd/server/v3": ETCD_VERSION}, {})
    _go(["build", "-ldflags", "-s -w", "-o", str(out / "etcd"), "go.etcd.io/etcd/server/v3"], module, env)


def ensure_built(force: bool = False) -> Path:
    """Build whatever binary of the pinned versions is missing; return their directory."""
    out = bin_dir()
    missing = list(BINARIES) if force else missing_binaries()
    if not missing:
        return out
    if shutil.which("go") is None:
        raise SystemExit("Go is required to build the local control plane (https://go.dev/dl/).")
    env = GoEnv(cache_root())
    work = out.parent / "src"
    staging = out.parent / "bin.partial"
    staging.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    if {"kube-apiserver", "kubectl"} & set(missing):
        build_kubernetes(env, work, staging)
    if "etcd" in missing:
        build_etcd(env, work, staging)
    out.mkdir(parents=True, exist_ok=True)
    for built in staging.iterdir():
        built.replace(out / built.name)
    staging.rmdir()
    print(f"built {', '.join(missing)} in {time.monotonic() - started:.0f} s into {out}", flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="rebuild even if the binaries exist")
    args = parser.parse_args(argv)
    print(ensure_built(force=args.force))
    return 0


if __name__ == "__main__":
    sys.exit(main())
