"""VisitorTrackingMiddleware against the real agent: what a request sends, what it never sends,
and what happens when the agent is away or the queue is full."""

import logging
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from django.contrib.auth.models import User
from django.core.exceptions import ImproperlyConfigured, MiddlewareNotUsed
from django.test import Client, override_settings

import pytest

from tests.conftest import eventually
from tests.settings import HOOK_TOKEN
from tracking import runtime
from tracking.agent import Agent
from tracking.conf import load
from tracking.middleware import VisitorCleanUpMiddleware, VisitorTrackingMiddleware
from tracking.sender import Sender

pytestmark = pytest.mark.django_db


def unique_path() -> str:
    return f"/t-{uuid.uuid4().hex[:12]}/"


def sent() -> None:
    """Waits until this process's sender has handed every visit to the agent."""
    assert runtime.get().sender().wait_idle(5), "the sender did not catch up"


def test_a_request_sends_its_visit_with_everything_the_seed_tracked(agent):
    User.objects.create_user("alice", password="pw")
    client = Client(REMOTE_ADDR="203.0.113.21", HTTP_USER_AGENT="Mozilla/5.0 (pytest) é",
                    HTTP_REFERER="https://example.org/from")
    client.login(username="alice", password="pw")
    path = unique_path()
    assert client.get(path).status_code == 200
    sent()
    key = "s:" + client.session.session_key
    visitor = eventually(lambda: agent.visitor(key), what=f"a visitor {key}")
    assert visitor["ip"] == "203.0.113.21"
    assert visitor["user"] == "alice"
    assert visitor["user_agent"] == "Mozilla/5.0 (pytest) é"
    assert visitor["referrer"] == "https://example.org/from"
    assert (visitor["last_page"], visitor["page_views"]) == (path, 1)
    client.get(path + "next")
    sent()
    visitor = eventually(lambda: (v := agent.visitor(key)) and v["page_views"] == 2 and v,
                         what="a second page view")
    assert visitor["last_page"] == path + "next"


def test_the_first_page_of_a_new_session_counts_for_that_session(agent):
    client = Client(REMOTE_ADDR="203.0.113.22")
    path = unique_path()
    client.get(path)
    client.get(path)
    client.get(path + "2")
    sent()
    key = "s:" + client.session.session_key
    visitor = eventually(lambda: (v := agent.visitor(key)) and v["page_views"] == 3 and v,
                         what="three page views in one session")
    assert visitor["user"] is None
    # Nobody else was made of these requests.
    assert [v for v in agent.visitors() if v["last_page"].startswith(path)] == [visitor]


def test_no_tracking_prefixes_are_never_sent(agent):
    before = agent.stats()
    client = Client(REMOTE_ADDR="203.0.113.23")
    for _ in range(3):
        assert client.get("/private/area/").status_code == 200
    client.get(unique_path())
    sent()
    after = eventually(lambda: (s := agent.stats())["tracked"] > before["tracked"] and s)
    assert after["tracked"] - before["tracked"] == 1
    assert after["untracked"] == before["untracked"]


def test_user_agent_rules_are_the_agents(agent):
    from tests.agent_process import api

    assert api("POST", "/v1/ua", {"keywords": ["PytestBot"]})[0] == 200
    before = agent.stats()
    Client(REMOTE_ADDR="203.0.113.24", HTTP_USER_AGENT="Mozilla/5.0 (compatible; PytestBot/1.0)"
           ).get(unique_path())
    sent()
    after = eventually(lambda: (s := agent.stats())["untracked"] > before["untracked"] and s)
    assert (after["untracked"] - before["untracked"], after["tracked"]) == (1, before["tracked"])
    assert not [v for v in agent.visitors() if v["ip"] == "203.0.113.24"]


def test_headers_the_agent_would_refuse_are_cleaned_not_lost(agent):
    path = unique_path()
    # A user agent in UTF-8 (as WSGI hands it over, decoded as Latin-1), with a control
    # character, and one far over the agent's 2048 bytes.
    utf8_as_latin1 = "Mozilla/5.0 ünïcode €".encode().decode("latin-1")
    Client(REMOTE_ADDR="203.0.113.25", HTTP_USER_AGENT=utf8_as_latin1 + "\x01").get(path + "a")
    Client(REMOTE_ADDR="203.0.113.26", HTTP_USER_AGENT="x" * 5000,
           HTTP_REFERER="https://example.org/" + "é" * 3000).get(path + "b")
    sent()
    a = eventually(lambda: next((v for v in agent.visitors() if v["last_page"] == path + "a"), None))
    b = eventually(lambda: next((v for v in agent.visitors() if v["last_page"] == path + "b"), None))
    assert a["user_agent"] == "Mozilla/5.0 ünïcode €"
    assert b["user_agent"] == "x" * 2048
    assert len(b["referrer"].encode()) <= 4096 and b["referrer"].startswith("https://example.org/é")


def test_a_failing_view_is_still_a_visit_and_the_error_is_the_views(agent):
    client = Client(REMOTE_ADDR="203.0.113.27", raise_request_exception=False)
    assert client.get("/broken/").status_code == 500
    sent()
    eventually(lambda: any(v["ip"] == "203.0.113.27" and v["last_page"] == "/broken/"
                           for v in agent.visitors()))


def test_a_refused_visit_is_logged_and_the_rest_of_its_batch_is_stored(agent, caplog):
    path = unique_path()
    sender = Sender(Agent(load(type("S", (), {})())), HOOK_TOKEN, queue_size=10, batch_size=10,
                    batch_interval=0.2, flush_timeout=2)
    now = time.time()
    good = [(now, "203.0.113.28", f"refused-{i}", "UA", None, None, f"{path}{i}") for i in range(3)]
    bad = (now + 3600, "203.0.113.28", "refused-bad", "UA", None, None, path + "bad")
    with caplog.at_level(logging.ERROR, logger="tracking"):
        for visit in (good[0], bad, good[1], good[2]):
            assert sender.submit(visit)
        assert sender.wait_idle(5)
    assert sender.stats.sent == 3 and sender.stats.refused == 1
    assert "the agent refused a visit (`at`" in caplog.text and "more than 5 minutes" in caplog.text
    keys = {v["key"] for v in agent.visitors() if v["last_page"].startswith(path)}
    assert keys == {"s:refused-0", "s:refused-1", "s:refused-2"}
    sender.flush()


@override_settings(TRACKING_HOOK_TOKEN="not-the-hook-token")
def test_a_wrong_token_is_a_log_line_naming_the_setting(caplog):
    with caplog.at_level(logging.ERROR, logger="tracking"):
        assert Client(REMOTE_ADDR="203.0.113.29").get(unique_path()).status_code == 200
        sent()
    assert "wrong hook token" in caplog.text
    assert "TRACKING_HOOK_TOKEN is not the agent's hook token" in caplog.text


@override_settings(TRACKING_AGENT_URL="http://127.0.0.1:1")
def test_an_agent_away_costs_the_request_nothing_and_says_so_once(caplog):
    client = Client(REMOTE_ADDR="203.0.113.30")
    with caplog.at_level(logging.WARNING, logger="tracking"):
        started = time.monotonic()
        for _ in range(20):
            assert client.get(unique_path()).status_code == 200
        elapsed = time.monotonic() - started
        eventually(lambda: "cannot send visits to the agent" in caplog.text)
    assert caplog.text.count("cannot send visits to the agent") == 1, caplog.text
    assert "Connection refused" in caplog.text and "keeping up to 10000 visits" in caplog.text
    # Twenty requests through the whole stack, with nowhere to send their visits.
    assert elapsed < 2, elapsed


@override_settings(TRACKING_AGENT_URL="http://127.0.0.1:1", TRACKING_QUEUE_SIZE=3)
def test_a_full_queue_drops_visits_with_one_log_line():
    client = Client(REMOTE_ADDR="203.0.113.31")
    for _ in range(10):
        assert client.get(unique_path()).status_code == 200
    sender = runtime.get().sender()
    # Three wait, in the queue or in the batch the sender keeps trying.
    assert sender.stats.dropped_full == 7


def test_the_full_queue_log_line(caplog):
    with override_settings(TRACKING_AGENT_URL="http://127.0.0.1:1", TRACKING_QUEUE_SIZE=1):
        with caplog.at_level(logging.WARNING, logger="tracking"):
            client = Client(REMOTE_ADDR="203.0.113.32")
            for _ in range(5):
                client.get(unique_path())
    assert caplog.text.count("the visit queue is full (1 visits wait for the agent at "
                             "http://127.0.0.1:1)") == 1, caplog.text
    assert "not sent to the agent at http://127.0.0.1:1 before exit" in caplog.text


def test_visits_queued_at_exit_are_sent_before_the_process_ends(agent):
    path = unique_path()
    # A batch interval of 30 s: nothing would be sent before the process exits but for the
    # flush at exit. Sessions in cookies: the child has no database.
    script = f"""
from tests import settings
settings.TRACKING_BATCH_INTERVAL = 30
settings.SESSION_ENGINE = "django.contrib.sessions.backends.signed_cookies"
import django
django.setup()
from django.test import Client
for i in range(50):
    assert Client(REMOTE_ADDR="203.0.113.33").get("{path}" + str(i)).status_code == 200
"""
    env = dict(os.environ, DJANGO_SETTINGS_MODULE="tests.settings")
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          cwd=Path(__file__).parents[1], timeout=60)
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 20
    views = [v for v in agent.visitors() if v["last_page"].startswith(path)]
    assert sum(v["page_views"] for v in views) == 50, views


def test_the_cleanup_middleware_takes_itself_out():
    with pytest.raises(MiddlewareNotUsed):
        VisitorCleanUpMiddleware(lambda request: None)


@override_settings(TRACKING_HOOK_TOKEN=None)
def test_the_tracking_middleware_without_a_token_does_not_start():
    with pytest.raises(ImproperlyConfigured, match="TRACKING_HOOK_TOKEN_FILE"):
        VisitorTrackingMiddleware(lambda request: None)
