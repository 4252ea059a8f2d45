"""Set-up errors of the command line: one line, naming what is wrong and what it takes."""

from __future__ import annotations

import subprocess
import sys

import pytest


def run(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "instance_profile_operator.cli", *args],
                          env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("args,env,names,takes", [
    ((), {"IPO_WORKERS": "abc"}, "IPO_WORKERS", "a whole number of at least 1"),
    ((), {"IPO_RESYNC_SECONDS": "-1"}, "IPO_RESYNC_SECONDS", "a number of seconds greater than 0"),
    ((), {"IPO_LOG_FORMAT": "yaml"}, "IPO_LOG_FORMAT", "one of text, json"),
    ((), {"IPO_ALL_NAMESPACES": "maybe"}, "IPO_ALL_NAMESPACES", "true or false"),
    (("--workers", "0"), {}, "--workers", "a whole number of at least 1"),
    (("--retry-max-seconds", "soon"), {}, "--retry-max-seconds", "a number of seconds greater than 0"),
    (("--log-format", "xml"), {}, "--log-format", "one of text, json"),
    (("--bogus",), {}, "--bogus", "unrecognized"),
])
def test_an_invalid_value_is_one_line_naming_it_and_exit_2(args, env, names, takes):
    done = run("run", "--region", "us-east-1", *args, **env)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and names in done.stderr and takes in done.stderr, done.stderr


def test_no_region_names_every_variable_that_sets_it():
    done = run("run")
    assert done.returncode == 2 and done.stderr.count("\n") == 1
    for source in ("--region", "IPO_REGION", "AWS_REGION", "AWS_DEFAULT_REGION"):
        assert source in done.stderr


def test_help_is_plain_text_and_shows_defaults():
    top, sub = run("--help"), run("run", "--help")
    assert top.returncode == sub.returncode == 0
    assert "``" not in top.stdout + sub.stdout and ":class:" not in top.stdout
    assert "(default: 16)" in sub.stdout and "[IPO_WORKERS]" in sub.stdout
