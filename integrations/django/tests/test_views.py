"""The map and live pages: for staff only, filled from the real agent with the admin token,
the seed's DEFAULT_TRACKING_TEMPLATE honoured, the world map and scripts served locally."""

import uuid

import pytest
from django.contrib.auth.models import User
from django.test import override_settings

from tracking.views import places, project

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    User.objects.create_user("admin", password="pw", is_staff=True)
    client.login(username="admin", password="pw")
    return client


@pytest.fixture
def visited(agent):
    path = f"/map-{uuid.uuid4().hex[:10]}/"
    agent.visit(ip="192.0.2.81", session_key=path, url=path, user="carol",
                referrer="https://example.org/r")
    return path


@pytest.mark.parametrize("url", ["/tracking/map/", "/tracking/live/", "/tracking/map/data/",
                                 "/tracking/live/data/"])
def test_the_pages_are_for_staff_only(client, url):
    assert client.get(url).status_code == 302
    User.objects.create_user("user", password="pw")
    client.login(username="user", password="pw")
    response = client.get(url)
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_the_map_lists_active_visitors(staff, visited):
    response = staff.get("/tracking/map/")
    html = response.content.decode()
    assert response.status_code == 200
    assert "192.0.2.81" in html and visited in html and "carol" in html
    assert "No GeoIP database" in html  # the test agent has none
    assert 'src="/tracking/world.svg"' in html and "/tracking/assets/visitor_map.js" in html
    data = staff.get("/tracking/map/data/").json()
    assert data["geoip"] is None
    mine = [v for v in data["visitors"] if v["last_page"] == visited]
    assert [(v["ip"], v["user"], v["place"]) for v in mine] == [("192.0.2.81", "carol", "unknown")]


@override_settings(NO_TRACKING_PREFIXES=["/tracking/"])
def test_the_live_page_lists_active_visitors_and_counts(staff, visited, agent):
    # The staff user's own page views are not tracked here: they would change the counts.
    html = staff.get("/tracking/live/").content.decode()
    assert "192.0.2.81" in html and "https://example.org/r" in html
    data = staff.get("/tracking/live/data/").json()
    assert data["counts"] == agent.active()
    mine = [v for v in data["visitors"] if v["last_page"] == visited]
    assert [(v["user"], v["page_views"]) for v in mine] == [("carol", 1)]


@override_settings(DEFAULT_TRACKING_TEMPLATE="custom/map.html")
def test_the_seeds_map_template_setting_is_honoured(staff, visited):
    html = staff.get("/tracking/map/").content.decode()
    assert "<title>Our own map</title>" in html and 'class="custom-map"' in html
    assert "192.0.2.81" in html


@override_settings(TRACKING_ADMIN_TOKEN=None)
def test_without_the_admin_token_the_pages_say_what_to_set(staff):
    html = staff.get("/tracking/map/").content.decode()
    assert "set TRACKING_ADMIN_TOKEN" in html
    response = staff.get("/tracking/live/data/")
    assert response.status_code == 502 and "TRACKING_ADMIN_TOKEN" in response.json()["error"]


@override_settings(TRACKING_ADMIN_TOKEN="wrong")
def test_a_wrong_admin_token_is_shown_as_the_agents_refusal(staff):
    html = staff.get("/tracking/live/").content.decode()
    assert "the agent refused: wrong admin token" in html


def test_the_world_map_and_the_scripts_come_from_here_and_the_agent(client):
    world = client.get("/tracking/world.svg")
    assert world.status_code == 200 and world["Content-Type"] == "image/svg+xml"
    assert b"<svg" in world.content[:500]
    for name, kind in [("visitor_map.js", "text/javascript"), ("live.js", "text/javascript"),
                       ("tracking.css", "text/css")]:
        response = client.get(f"/tracking/assets/{name}")
        assert response.status_code == 200 and response["Content-Type"].startswith(kind)
    assert client.get("/tracking/assets/conf.py").status_code == 404


def test_markers_are_placed_on_the_equirectangular_map_and_shared_by_nearby_visitors():
    assert project(0, 0) == (500, 250)
    assert project(-180, 90) == (0, 0)
    london = {"latitude": 51.5142, "longitude": -0.0931, "city": "London", "country": "United Kingdom"}
    near = dict(london, latitude=51.52)
    milton = {"latitude": 47.25, "longitude": -122.31, "city": "Milton", "country": "United States"}
    found = places([{"location": london, "user": "a", "last_page": "/"},
                    {"location": near, "user": None, "last_page": "/b"},
                    {"location": milton, "user": None, "last_page": "/"},
                    {"location": None, "user": None, "last_page": "/"}])
    assert [(p["name"], p["count"]) for p in found] == [("London, United Kingdom", 2),
                                                        ("Milton, United States", 1)]
    assert found[0]["title"] == "London, United Kingdom (2)\na on /\nguest on /b"
    assert found[0]["r"] > found[1]["r"] == 5
