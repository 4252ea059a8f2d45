"""The operator, as a subprocess with the deploy/ ServiceAccount's RBAC, behind a fault proxy."""

from __future__ import annotations

from typing import Callable, Iterator

import pytest

from ..support.faultproxy import FaultProxy
from ..support.operator import OperatorProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="session")
def proxy(devenv) -> Iterator[FaultProxy]:
    proxy = FaultProxy(devenv.ec2_endpoint_url).start()
    yield proxy
    proxy.stop()


@pytest.fixture(autouse=True)
def _fresh_proxy(proxy: FaultProxy) -> None:
    proxy.clear()
    proxy.reset_counts()


@pytest.fixture
def start_operator(devenv, operator_kubeconfig, proxy, namespace, tmp_path) -> Iterator[Callable[..., OperatorProcess]]:
    """Factory: start an operator watching this test's namespace (or the given ones)."""
    started: list[OperatorProcess] = []

    def start(namespaces: list[str] | None = None, **env: str) -> OperatorProcess:
        aws = {**devenv.aws_variables(), "AWS_ENDPOINT_URL": proxy.url}
        operator = OperatorProcess(operator_kubeconfig, aws, tmp_path / f"operator-{len(started)}.log",
                                   namespaces=namespaces if namespaces is not None else [namespace], **env)
        started.append(operator.start())
        return operator

    yield start
    for operator in started:
        if operator.process and operator.process.poll() is None:
            operator.stop()


@pytest.fixture
def operator(start_operator) -> OperatorProcess:
    return start_operator()
