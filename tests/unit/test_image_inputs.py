"""The image builder's inputs: its cache key covers every module the wheel carries, and pip is pinned."""

from __future__ import annotations

import tomllib

from setuptools import find_packages

from instance_profile_operator.devenv.image import REPO, pip_requirement, runtime_requirements, source_files


def test_image_key_covers_exactly_the_modules_of_the_wheel():
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())
    find = pyproject["tool"]["setuptools"]["packages"]["find"]
    [where] = find["where"]
    packages = find_packages(where=REPO / where, exclude=find["exclude"])
    in_wheel = {module for package in packages for module in (REPO / where / package.replace(".", "/")).glob("*.py")}
    keyed = {path for path in source_files() if path.suffix == ".py"}
    assert keyed == in_wheel
    assert not [path for path in keyed if "devenv" in path.parts]


def test_wheelhouse_holds_the_runtime_dependencies_and_a_pinned_pip():
    assert pip_requirement((REPO / "constraints.txt").read_text()).startswith("pip==")
    assert pip_requirement("kopf==1.45.2\npip==26.3\npluggy==1.7.0\n") == "pip==26.3"
    assert runtime_requirements('[project]\ndependencies = ["kopf>=1.45,<1.46", "boto3"]\n') == ["kopf>=1.45,<1.46", "boto3"]
