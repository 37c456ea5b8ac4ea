"""{% visitors_on_site %} and {% visitors_on_page %} as the seed documents them, from the real
agent's active counts, reused for a second per process."""

import logging
import time
import uuid

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.template import Context, Template
from django.test import RequestFactory, override_settings

from tests.conftest import eventually

pytestmark = pytest.mark.django_db

SEED = """{% load tracking_tags %}{% visitors_on_site as visitors %}{% visitors_on_page as same_page %}
{{ same_page }} of {{ visitors }} active user{{ visitors|pluralize }}
{% if same_page == 1 %}is{% else %}are{% endif %} reading this page"""


def render(text, path):
    request = RequestFactory().get(path)
    return Template(text).render(Context({"request": request})).strip()


@override_settings(TRACKING_ACTIVE_CACHE_SECONDS=0)
def test_the_seeds_example_renders_the_agents_counts(agent):
    path = f"/tags-{uuid.uuid4().hex[:10]}/"
    agent.visit(ip="192.0.2.71", session_key=f"{path}a", url=path)
    agent.visit(ip="192.0.2.72", session_key=f"{path}b", url=path, user="bob")
    site = agent.active()["visitors"]
    text = render(SEED, path)
    assert text.splitlines() == [f"2 of {site} active users", "are reading this page"]
    assert agent.active(path)["visitors"] == 2


@override_settings(TRACKING_ACTIVE_CACHE_SECONDS=0)
def test_without_as_a_tag_renders_the_number(agent):
    path = f"/tags-{uuid.uuid4().hex[:10]}/"
    agent.visit(ip="192.0.2.73", session_key=path, url=path)
    assert render("{% load tracking_tags %}{% visitors_on_page %}", path) == "1"
    assert render("{% load tracking_tags %}{% visitors_on_site %}", path) == str(
        agent.active()["visitors"])


@override_settings(TRACKING_ACTIVE_CACHE_SECONDS=0.5)
def test_counts_are_reused_for_the_cache_period(agent):
    path = f"/tags-{uuid.uuid4().hex[:10]}/"
    agent.visit(ip="192.0.2.74", session_key=f"{path}a", url=path)
    tag = "{% load tracking_tags %}{% visitors_on_page %}"
    assert render(tag, path) == "1"
    agent.visit(ip="192.0.2.75", session_key=f"{path}b", url=path)
    assert render(tag, path) == "1", "within the cache period"
    time.sleep(0.6)
    assert render(tag, path) == "2"


def test_the_page_tag_needs_the_request_in_the_context():
    with pytest.raises(ImproperlyConfigured, match="django.template.context_processors.request"):
        Template("{% load tracking_tags %}{% visitors_on_page %}").render(Context({}))


@override_settings(TRACKING_AGENT_URL="http://127.0.0.1:1")
def test_an_agent_away_shows_zero_and_says_why_once(caplog):
    with caplog.at_level(logging.WARNING, logger="tracking"):
        assert render(SEED, "/x/").splitlines()[0] == "0 of 0 active users"
    assert caplog.text.count("cannot read active visitors from the agent") == 1


def test_a_real_page_through_the_middleware_counts_itself(agent, client):
    path = f"/tags/{uuid.uuid4().hex[:10]}/"
    with override_settings(TRACKING_ACTIVE_CACHE_SECONDS=0):
        client.get(path, REMOTE_ADDR="192.0.2.76")  # the visit, sent in the background
        eventually(lambda: agent.active(path)["visitors"] == 1)
        text = client.get(path, REMOTE_ADDR="192.0.2.76").content.decode()
    assert text == f"1 of {agent.active()['visitors']}"
