"""Build the Go commands the tests and the dev node use (helm, small checkers, the pod sandbox),
pinned and cached.

Like the control plane (build.py), and with its helpers, each command is compiled once per
machine into the per-user cache, in a directory named by what pins it:

* a released command (helm) by its module version, built through a generated wrapper module;
* a checker kept in this repository's ``tools/`` by a hash of its sources (``go.mod``,
  ``go.sum``, ``*.go``), built with ``-mod=readonly`` so the committed ``go.sum`` decides
  every dependency; editing the checker rebuilds it.
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from .build import GoEnv, _go, _write_module, cache_root

TOOLS_DIR = Path(__file__).resolve().parents[3] / "tools"

HELM_VERSION = "v4.3.1"


@dataclass(frozen=True)
class GoTool:
    """One command: ``package`` of ``module@version``, or the module kept in ``source``."""

    name: str
    package: str
    module: str = ""
    version: str = ""
    source: Path | None = None
    ldflags: str = "-s -w"

    def pin(self) -> str:
        """What names the cache directory: the release, or a digest of the sources."""
        if self.source is None:
            return self.version
        digest = hashlib.sha256()
        for path in sorted(self.source.iterdir()):
            if path.name in ("go.mod", "go.sum") or path.suffix == ".go":
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()[:16]

    def binary(self) -> Path:
        return cache_root() / f"{self.name}-{self.pin()}" / "bin" / self.name


HELM = GoTool(
    "helm",
    package="helm.sh/helm/v4/cmd/helm",
    module="helm.sh/helm/v4",
    version=HELM_VERSION,
    ldflags=f"-s -w -X helm.sh/helm/v4/internal/version.version={HELM_VERSION}",
)
PROMQL_CHECK = GoTool("promql-check", package=".", source=TOOLS_DIR / "promql-check")
KSTATUS_CHECK = GoTool("kstatus-check", package=".", source=TOOLS_DIR / "kstatus-check")

# The dev node's pod sandbox, and the program of its test pods (what a pod can reach).
PAUSE = GoTool("pause", package=".", source=TOOLS_DIR / "pause")
PODCHECK = GoTool("podcheck", package=".", source=TOOLS_DIR / "podcheck")

TOOLS = {tool.name: tool for tool in (HELM, PROMQL_CHECK, KSTATUS_CHECK, PAUSE, PODCHECK)}


def _compile(tool: GoTool, env: GoEnv, output: Path) -> None:
    if tool.source is not None:
        _go(["build", "-mod=readonly", "-ldflags", tool.ldflags, "-o", str(output), tool.package], tool.source, env)
        return
    wrapper = output.parent.parent / "src"
    _write_module(wrapper, f"local/ipo-{tool.name}-build", {tool.module: tool.version}, {})
    _go(["build", "-ldflags", tool.ldflags, "-o", str(output), tool.package], wrapper, env)


def ensure_built(tool: GoTool) -> Path:
    """Build ``tool`` unless its pinned binary is cached; return the binary's path."""
    target = tool.binary()
    if target.exists():
        return target
    if shutil.which("go") is None:
        raise SystemExit(f"Go is required to build {tool.name} (https://go.dev/dl/).")
    partial = target.with_name(f"{tool.name}.partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    _compile(tool, GoEnv(cache_root()), partial)
    partial.replace(target)
    print(f"built {tool.name} in {time.monotonic() - started:.0f} s into {target}", flush=True)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"any of {', '.join(TOOLS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - set(TOOLS)
    if unknown:
        parser.error(f"unknown tool: {', '.join(sorted(unknown))}")
    for name in args.names or TOOLS:
        print(ensure_built(TOOLS[name]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
