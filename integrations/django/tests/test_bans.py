"""BannedIPMiddleware against the real agent: 403 for a banned client, behind trusted proxies
only as they report it, one check per address per cache period, and failing open or closed."""

import logging
import time

import pytest
from django.test import Client, override_settings

from tracking import runtime

pytestmark = pytest.mark.django_db

PROXY = "10.9.0.5"


def get(remote, forwarded=None):
    extra = {} if forwarded is None else {"HTTP_X_FORWARDED_FOR": forwarded}
    return Client(REMOTE_ADDR=remote, **extra).get("/page/")


@pytest.fixture
def banned(agent):
    agent.ban("198.51.100.0/28", "2001:db8:bad::/48")
    yield
    agent.unban("198.51.100.0/28", "2001:db8:bad::/48")


def test_a_banned_client_gets_403_and_others_are_served(banned):
    response = get("198.51.100.7")
    assert response.status_code == 403
    assert b"banned" in response.content
    assert get("2001:db8:bad::9").status_code == 403
    assert get("198.51.100.77").status_code == 200
    assert get("2001:db8:900d::9").status_code == 200


@override_settings(TRACKING_TRUSTED_PROXIES=[PROXY])
def test_behind_a_trusted_proxy_the_forwarded_client_is_checked(banned):
    assert get(PROXY, "198.51.100.7").status_code == 403
    assert get(PROXY, "198.51.100.77").status_code == 200
    # The proxy itself is not banned: without a header it is served.
    assert get(PROXY).status_code == 200


@override_settings(TRACKING_TRUSTED_PROXIES=[PROXY])
def test_a_banned_client_cannot_forward_its_way_around_the_ban(banned):
    # It writes a clean address itself; the proxy appends the one it really came from.
    assert get(PROXY, "192.0.2.50, 198.51.100.7").status_code == 403
    assert get(PROXY, "198.51.100.77, 198.51.100.7").status_code == 403


@override_settings(TRACKING_TRUSTED_PROXIES=[PROXY])
def test_an_untrusted_peer_is_checked_as_itself_whatever_it_forwards(banned):
    assert get("192.0.2.60", "198.51.100.7").status_code == 200
    assert get("198.51.100.7", "192.0.2.60").status_code == 403


@override_settings(TRACKING_BAN_CACHE_SECONDS=0.5)
def test_a_verdict_is_reused_for_the_cache_period_then_asked_again(agent):
    checker = runtime.get().bans()
    for _ in range(5):
        assert get("198.51.100.20").status_code == 200
    assert checker.asked == 1
    agent.ban("198.51.100.20")
    try:
        assert get("198.51.100.20").status_code == 200, "within the cache period"
        time.sleep(0.6)
        assert get("198.51.100.20").status_code == 403
        assert checker.asked == 2
    finally:
        agent.unban("198.51.100.20")


@override_settings(TRACKING_BAN_CACHE_SECONDS=0)
def test_without_a_cache_every_request_is_checked(agent):
    for _ in range(3):
        get("198.51.100.21")
    assert runtime.get().bans().asked == 3


@override_settings(TRACKING_AGENT_URL="http://127.0.0.1:1")
def test_an_agent_away_fails_open_by_default_with_one_log_line(caplog):
    with caplog.at_level(logging.WARNING, logger="tracking"):
        for _ in range(5):
            assert get("198.51.100.22").status_code == 200
    assert caplog.text.count("cannot check bans with the agent") == 1
    assert "letting requests through meanwhile" in caplog.text
    # One failed check stands for the next second's: the agent was asked once.
    assert runtime.get().bans().asked == 1


@override_settings(TRACKING_AGENT_URL="http://127.0.0.1:1", TRACKING_FAIL_CLOSED=True)
def test_an_agent_away_fails_closed_when_asked_to(caplog):
    with caplog.at_level(logging.WARNING, logger="tracking"):
        response = get("198.51.100.23")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert "refusing requests meanwhile (TRACKING_FAIL_CLOSED)" in caplog.text
