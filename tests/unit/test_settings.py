"""Every flag has an environment variable; flags win; nonsense is refused with a clear message."""

from __future__ import annotations

import argparse
import logging

import pytest

from instance_profile_operator.handlers import QuietWatchLog
from instance_profile_operator.aws.ratelimit import Limit
from instance_profile_operator.settings import SettingsError, add_arguments, from_arguments


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return from_arguments(parser.parse_args(argv))


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in ("IPO_NAMESPACES", "IPO_ALL_NAMESPACES", "IPO_REGION", "AWS_REGION", "AWS_DEFAULT_REGION",
                 "IPO_RESYNC_SECONDS", "IPO_LOG_FORMAT", "IPO_WORKERS", "AWS_MAX_ATTEMPTS", "IPO_METRICS_ADDRESS",
                 "IPO_EC2_BUDGET_SHARE", "IPO_EC2_RATE_LIMITS", "IPO_POLICY_ENFORCEMENT"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_watch_all_namespaces_and_resync_every_minute(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    settings = parse()
    assert settings.namespaces == () and settings.region == "eu-west-1"
    assert settings.resync_seconds == 60 and settings.log_format == "text"


def test_environment_configures_every_setting(monkeypatch):
    monkeypatch.setenv("IPO_NAMESPACES", "team-a,team-b")
    monkeypatch.setenv("IPO_REGION", "ap-southeast-2")
    monkeypatch.setenv("AWS_REGION", "us-east-1")  # IPO_REGION wins
    monkeypatch.setenv("IPO_RESYNC_SECONDS", "15")
    monkeypatch.setenv("IPO_LOG_FORMAT", "json")
    monkeypatch.setenv("IPO_WORKERS", "4")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "3")
    monkeypatch.setenv("IPO_METRICS_ADDRESS", "0.0.0.0:8081")
    settings = parse()
    assert settings.namespaces == ("team-a", "team-b") and settings.region == "ap-southeast-2"
    assert (settings.resync_seconds, settings.log_format, settings.workers, settings.aws_max_attempts) == (15, "json", 4, 3)
    assert settings.metrics_address == "0.0.0.0:8081"


def test_flags_override_the_environment(monkeypatch):
    monkeypatch.setenv("IPO_REGION", "ap-southeast-2")
    monkeypatch.setenv("IPO_RESYNC_SECONDS", "15")
    settings = parse("--region", "us-west-2", "--resync-seconds", "30", "-n", "a", "--namespace", "b")
    assert (settings.region, settings.resync_seconds, settings.namespaces) == ("us-west-2", 30, ("a", "b"))


def test_all_namespaces_flag_and_environment(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert parse("--all-namespaces").namespaces == ()
    monkeypatch.setenv("IPO_NAMESPACES", "a")
    monkeypatch.setenv("IPO_ALL_NAMESPACES", "true")
    assert parse().namespaces == ()


def test_no_region_is_refused_naming_every_source():
    with pytest.raises(SettingsError, match="pass --region or set IPO_REGION, AWS_REGION or AWS_DEFAULT_REGION"):
        parse()


@pytest.mark.parametrize("argv", [("--resync-seconds", "0"), ("--workers", "0"), ("--retry-base-seconds", "nan")])
def test_nonsense_flags_are_refused(argv):
    with pytest.raises(SystemExit):
        parse("--region", "us-east-1", *argv)


@pytest.mark.parametrize("name,value,takes", [
    ("IPO_WORKERS", "abc", "a whole number of at least 1"),
    ("IPO_RESYNC_SECONDS", "0", "a number of seconds greater than 0"),
    ("IPO_LOG_FORMAT", "xml", "one of text, json"),
    ("IPO_ALL_NAMESPACES", "perhaps", "true or false"),
])
def test_nonsense_environment_is_refused_naming_the_variable(monkeypatch, name, value, takes):
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"environment variable {name} takes {takes}, not '{value}'"):
        parse("--region", "us-east-1")


def test_namespace_and_all_namespaces_exclude_each_other(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(SystemExit):
        parse("--namespace", "a", "--all-namespaces")


def test_quiet_watch_log_drops_only_the_per_event_success_line():
    quiet = QuietWatchLog()
    record = lambda text: logging.LogRecord("kopf.objects", logging.INFO, __file__, 1, text, None, None)  # noqa: E731
    assert not quiet.filter(record("Handler 'set' succeeded."))
    assert quiet.filter(record("Handler 'finalize' succeeded."))
    assert quiet.filter(record("Handler 'watch' failed with an exception and will try again in 1 seconds: boom"))


def test_ec2_limits_default_to_the_whole_budget_at_ec2s_buckets(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    settings = parse()
    assert settings.ec2_budget_share == 1.0 and settings.ec2_rate_limits == ()


def test_ec2_limits_from_the_environment_and_flags(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv("IPO_EC2_BUDGET_SHARE", "0.6")
    monkeypatch.setenv("IPO_EC2_RATE_LIMITS", "AssociateIamInstanceProfile=50:2, DescribeInstances=100:10")
    settings = parse()
    assert settings.ec2_budget_share == 0.6
    assert settings.ec2_rate_limits == (("AssociateIamInstanceProfile", Limit(50, 2)), ("DescribeInstances", Limit(100, 10)))
    settings = parse("--ec2-budget-share", "0.25", "--ec2-rate-limit", "ReplaceIamInstanceProfileAssociation=25:1")
    assert settings.ec2_budget_share == 0.25
    assert settings.ec2_rate_limits[-1] == ("ReplaceIamInstanceProfileAssociation", Limit(25, 1))


@pytest.mark.parametrize("variable,value,message", [
    ("IPO_EC2_BUDGET_SHARE", "0", "IPO_EC2_BUDGET_SHARE takes a fraction greater than 0 and at most 1, not '0'"),
    ("IPO_EC2_BUDGET_SHARE", "1.5", "IPO_EC2_BUDGET_SHARE takes a fraction greater than 0 and at most 1, not '1.5'"),
    ("IPO_EC2_BUDGET_SHARE", "half", "IPO_EC2_BUDGET_SHARE takes a fraction greater than 0 and at most 1, not 'half'"),
    ("IPO_EC2_RATE_LIMITS", "AssociateIamInstanceProfile=5", "'AssociateIamInstanceProfile=5' is not ACTION=BURST:RATE"),
    ("IPO_EC2_RATE_LIMITS", "RunInstances=5:1", "unknown action 'RunInstances'"),
    ("IPO_EC2_RATE_LIMITS", "DescribeInstances=5:0", "'DescribeInstances=5:0': BURST must be at least 1 and RATE positive"),
    ("IPO_POLICY_ENFORCEMENT", "Audit", "IPO_POLICY_ENFORCEMENT takes one of Enforce, Disabled, not 'Audit'"),
])
def test_invalid_values_name_the_variable(monkeypatch, variable, value, message):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as refused:
        parse()
    assert message in str(refused.value) and variable in str(refused.value)


def test_policy_enforcement_is_on_by_default_and_can_be_disabled(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    assert parse().enforcing
    assert not parse("--policy-enforcement", "Disabled").enforcing


def test_a_webhook_needs_its_certificate(monkeypatch):
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    with pytest.raises(SettingsError, match="--webhook-address needs --webhook-cert-file and --webhook-key-file"):
        parse("--webhook-address", "0.0.0.0:9443")
