"""The operator's log filters: kopf's ERROR lines that report no error are logged at INFO. (An
admission refusal is logged at INFO where it is made, kube/admission.py: tests/e2e/test_tenancy.py.)"""

from __future__ import annotations

import logging

import pytest

from instance_profile_operator.handlers import NoErrorThatIsNone


def record(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("kopf._cogs.clients.api", level, __file__, 1, message, (), None)


def test_a_retried_429_is_info():
    message = ("Request attempt #1/9 failed; will retry: GET https://127.0.0.1/apis -> "
               "APITooManyRequestsError('storage is (re)initializing', ...)")
    entry = record(message)
    assert NoErrorThatIsNone().filter(entry)
    assert (entry.levelno, entry.levelname, entry.getMessage()) == (logging.INFO, "INFO", message)


@pytest.mark.parametrize("message", [
    "Request attempt #9/9 failed; escalating: GET https://127.0.0.1/apis -> APITooManyRequestsError('busy')",
    "Request attempt #1/9 failed; will retry: GET https://127.0.0.1/apis -> APIServerError('etcd down')",
    "Handler 'watch' failed with an exception. Will retry.",
])
def test_other_errors_stay_errors(message):
    entry = record(message)
    assert NoErrorThatIsNone().filter(entry) and entry.levelno == logging.ERROR
