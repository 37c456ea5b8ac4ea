"""The settings: defaults, every problem named with its setting, the seed's settings accepted,
and the system checks."""

from types import SimpleNamespace

import pytest
from django.core import checks
from django.core.exceptions import ImproperlyConfigured
from django.test import override_settings

from tracking import conf


def load(**values):
    return conf.load(SimpleNamespace(**values))


def problems(**values) -> str:
    with pytest.raises(ImproperlyConfigured) as raised:
        load(**values)
    return str(raised.value)


def test_defaults_are_the_documented_ones():
    s = load()
    assert (s.agent_url, s.agent_host, s.agent_port) == ("http://127.0.0.1:8080", "127.0.0.1", 8080)
    assert (s.hook_token, s.admin_token, s.trusted_proxies) == (None, None, ())
    assert (s.ban_cache_seconds, s.fail_closed, s.active_cache_seconds) == (5.0, False, 1.0)
    assert (s.queue_size, s.batch_size, s.batch_interval) == (10_000, 500, 0.1)
    assert (s.agent_timeout, s.send_timeout, s.flush_timeout) == (1.0, 30.0, 2.0)
    assert s.no_tracking_prefixes == ()
    assert s.map_template == "tracking/visitor_map.html"


def test_settings_are_taken_as_given():
    s = load(TRACKING_AGENT_URL="https://agent.internal:8443/", TRACKING_HOOK_TOKEN=" h ",
             TRACKING_TRUSTED_PROXIES=["10.0.0.5", "172.16.0.0/12", "2001:db8::/32"],
             TRACKING_BAN_CACHE_SECONDS=0, TRACKING_FAIL_CLOSED=True,
             NO_TRACKING_PREFIXES=("/admin/", "/health"), DEFAULT_TRACKING_TEMPLATE="x.html")
    assert (s.agent_url, s.agent_port, s.agent_tls) == ("https://agent.internal:8443", 8443, True)
    assert s.hook_token == "h"
    assert [str(n) for n in s.trusted_proxies] == ["10.0.0.5/32", "172.16.0.0/12", "2001:db8::/32"]
    assert (s.ban_cache_seconds, s.fail_closed) == (0.0, True)
    assert s.no_tracking_prefixes == ("/admin/", "/health")
    assert s.map_template == "x.html"


def test_a_token_is_read_from_its_file(tmp_path):
    (tmp_path / "hook-token").write_text("abc123\n")
    assert load(TRACKING_HOOK_TOKEN_FILE=str(tmp_path / "hook-token")).hook_token == "abc123"


def test_every_problem_is_named_with_its_setting_and_all_are_reported_at_once(tmp_path):
    text = problems(
        TRACKING_AGENT_URL="127.0.0.1:8080", TRACKING_TRUSTED_PROXIES=["10.0.0.300", "bad"],
        TRACKING_BAN_CACHE_SECONDS="5", TRACKING_FAIL_CLOSED="yes",
        NO_TRACKING_PREFIXES="/admin/", TRACKING_QUEUE_SIZE=0, TRACKING_BATCH_SIZE=5000,
        TRACKING_ADMIN_TOKEN_FILE=str(tmp_path / "missing"), TRACKING_TIMEOUT="ten")
    for expected in [
        "TRACKING_AGENT_URL: must be http://host:port or https://host:port, not '127.0.0.1:8080'",
        "TRACKING_TRUSTED_PROXIES: '10.0.0.300' is not an IP address or network",
        "TRACKING_TRUSTED_PROXIES: 'bad' is not an IP address or network",
        "TRACKING_BAN_CACHE_SECONDS: must be a number of seconds, not '5'",
        "TRACKING_FAIL_CLOSED: must be True or False, not 'yes'",
        "NO_TRACKING_PREFIXES: must be a list of path prefixes",
        "TRACKING_QUEUE_SIZE: must be between 1 and 10000000, not 0",
        "TRACKING_BATCH_SIZE: must be between 1 and 1000, not 5000",
        f"TRACKING_ADMIN_TOKEN_FILE: cannot read the token from '{tmp_path / 'missing'}'",
        "TRACKING_TIMEOUT: must be a positive number, not 'ten' (it is now the agent's --tracking-timeout",
    ]:
        assert expected in text, f"{expected!r} not in:\n{text}"


@pytest.mark.parametrize("values, says", [
    ({"TRACKING_HOOK_TOKEN": "a", "TRACKING_HOOK_TOKEN_FILE": "/x"}, "set either TRACKING_HOOK_TOKEN or TRACKING_HOOK_TOKEN_FILE"),
    ({"TRACKING_HOOK_TOKEN": ""}, "TRACKING_HOOK_TOKEN: must be the token"),
    ({"TRACKING_AGENT_URL": "http://127.0.0.1:8080/v1/"}, "must have no path or query"),
    ({"TRACKING_AGENT_URL": "http://127.0.0.1:99999"}, "is not a URL"),
    ({"NO_TRACKING_PREFIXES": ["admin/"]}, "'admin/' is not a path prefix starting with /"),
    ({"TRACKING_AGENT_TIMEOUT": 0}, "TRACKING_AGENT_TIMEOUT: must be at least 0.001"),
    ({"TRACKING_CLEANUP_TIMEOUT": -1}, "TRACKING_CLEANUP_TIMEOUT: must be a positive number"),
])
def test_one_bad_setting(values, says):
    assert says in problems(**values)


def test_the_seeds_settings_load_unchanged():
    s = load(TRACKING_TIMEOUT=10, TRACKING_CLEANUP_TIMEOUT=24, GOOGLE_MAPS_KEY="abc",
             TRACKING_USE_GEOIP=True, GEOIP_PATH="/usr/share/GeoIP/GeoIP.dat", GEOIP_CACHE_TYPE=4,
             NO_TRACKING_PREFIXES=["/family/"], DEFAULT_TRACKING_TEMPLATE="tracking/visitor_map.html")
    assert s.no_tracking_prefixes == ("/family/",)


def ids(found):
    return sorted(m.id for m in found if m.id.startswith("tracking."))


def test_the_system_checks_find_nothing_wrong_with_the_test_settings_but_the_seeds_settings():
    found = checks.run_checks()
    assert ids(found) == ["tracking.I001", "tracking.I001"], [str(m) for m in found]


@override_settings(TRACKING_BAN_CACHE_SECONDS=-1)
def test_a_bad_setting_is_a_system_check_error():
    found = [m for m in checks.run_checks() if m.id == "tracking.E001"]
    assert len(found) == 1 and "TRACKING_BAN_CACHE_SECONDS: must be at least 0" in found[0].msg


@override_settings(TRACKING_HOOK_TOKEN=None)
def test_the_middleware_without_a_hook_token_is_a_system_check_error():
    assert "tracking.E002" in ids(checks.run_checks())


@override_settings(MIDDLEWARE=[
    "django.contrib.sessions.middleware.SessionMiddleware",
    "tracking.middleware.VisitorTrackingMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "tracking.middleware.BannedIPMiddleware",
])
def test_a_middleware_order_that_cannot_work_is_warned_about():
    assert ids(checks.run_checks()).count("tracking.W001") == 1
    assert ids(checks.run_checks()).count("tracking.W002") == 1
