"""gotools: where each Go tool's binary is cached, and when a checker must be rebuilt."""

from __future__ import annotations

from pathlib import Path

import pytest

from instance_profile_operator.devenv import gotools


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IPO_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def checker(directory: Path) -> gotools.GoTool:
    directory.mkdir(exist_ok=True)
    (directory / "go.mod").write_text("module example.com/check\n")
    (directory / "go.sum").write_text("")
    (directory / "main.go").write_text("package main\n\nfunc main() {}\n")
    return gotools.GoTool("check", package=".", source=directory)


def test_released_tool_lives_in_a_directory_named_by_its_version(cache):
    assert gotools.HELM.binary() == cache / f"helm-{gotools.HELM_VERSION}" / "bin" / "helm"


def test_checker_pin_follows_its_go_sources_only(tmp_path):
    tool = checker(tmp_path / "check")
    pinned = tool.pin()
    (tmp_path / "check" / "README.md").write_text("notes")
    assert tool.pin() == pinned
    for name in ("main.go", "go.sum", "go.mod"):
        original = (tmp_path / "check" / name).read_text()
        (tmp_path / "check" / name).write_text(original + "// changed\n")
        assert tool.pin() != pinned, name
        (tmp_path / "check" / name).write_text(original)
    assert tool.pin() == pinned


def test_cached_binary_is_used_without_go(cache, tmp_path, monkeypatch):
    tool = checker(tmp_path / "check")
    tool.binary().parent.mkdir(parents=True)
    tool.binary().write_text("#!/bin/sh\n")
    monkeypatch.setenv("PATH", "")
    assert gotools.ensure_built(tool) == tool.binary()


def test_repository_checkers_have_committed_go_sum():
    for tool in (gotools.PROMQL_CHECK, gotools.KSTATUS_CHECK):
        assert (tool.source / "go.sum").stat().st_size > 0
