"""The map and live pages, for staff users: the agent's ``GET /v1/map`` and active visitors,
read with the admin token on the server side (the browser never sees a token), drawn on the
agent's own world map, and refreshed by a small script polling the data views. Polling rather
than the agent's server-sent feed: a stream held open would take a sync worker per open page.
No API key, no CDN: the map, the script and the styles come from this package and the agent."""

from __future__ import annotations

import threading
from importlib import resources

from django.contrib.auth.decorators import user_passes_test
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse

from . import runtime
from .agent import AgentRefused, AgentUnavailable

#: The world map is equirectangular with this view box (the agent's ``world.svg``).
WIDTH, HEIGHT = 1000, 500
#: Visitors listed at most.
LIMIT = 1000
#: How often the pages refresh, in seconds.
MAP_REFRESH, LIVE_REFRESH = 5, 2

ASSETS = {
    "visitor_map.js": "text/javascript; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
    "tracking.css": "text/css; charset=utf-8",
}

staff_required = user_passes_test(lambda u: u.is_active and u.is_staff)


class Unavailable(Exception):
    """The page cannot get its data; the message says why, for the page to show."""


def _admin_get(path: str):
    rt = runtime.get()
    token = rt.settings.admin_token
    if token is None:
        raise Unavailable("set TRACKING_ADMIN_TOKEN (or TRACKING_ADMIN_TOKEN_FILE, the agent's "
                          "`admin-token` file) to show active visitors")
    try:
        return rt.agent.call("GET", path, token)
    except AgentRefused as error:
        raise Unavailable(f"the agent refused: {error.message}") from error
    except AgentUnavailable as error:
        raise Unavailable(f"the agent did not answer: {error}") from error


def project(longitude: float, latitude: float) -> tuple[float, float]:
    return (longitude + 180) / 360 * WIDTH, (90 - latitude) / 180 * HEIGHT


def place_name(location: dict | None) -> str:
    if not location:
        return "unknown"
    parts = [p for p in (location.get("city"), location.get("country")) if p]
    return ", ".join(parts) or f"{location['latitude']}, {location['longitude']}"


def places(visitors: list[dict]) -> list[dict]:
    """Markers: visitors within a tenth of a degree of each other share one."""
    found: dict[tuple, dict] = {}
    for v in visitors:
        loc = v.get("location")
        if not loc:
            continue
        key = (round(loc["latitude"], 1), round(loc["longitude"], 1))
        place = found.get(key)
        if place is None:
            x, y = project(loc["longitude"], loc["latitude"])
            place = found[key] = {"x": round(x, 1), "y": round(y, 1), "name": place_name(loc),
                                  "count": 0, "who": []}
        place["count"] += 1
        place["who"].append(f"{v.get('user') or 'guest'} on {v.get('last_page')}")
    for place in found.values():
        place["r"] = round(min(5 + 2.5 * (place["count"] - 1) ** 0.5, 16), 1)
        place["title"] = f"{place['name']} ({place['count']})\n" + "\n".join(place["who"])
    return list(found.values())


def _map_data() -> dict:
    data = _admin_get("/v1/map")
    visitors = data.get("visitors", [])[:LIMIT]
    for v in visitors:
        v["place"] = place_name(v.get("location"))
    return {"geoip": data.get("geoip"), "visitors": visitors, "places": places(visitors)}


def _live_data() -> dict:
    visitors = _admin_get(f"/v1/visitors?active=true&limit={LIMIT}")
    counts = _admin_get("/v1/active")
    return {"counts": counts, "visitors": visitors}


@staff_required
def visitor_map(request):
    context = {"data_url": reverse("tracking-map-data"), "world_url": reverse("tracking-world"),
               "refresh_seconds": MAP_REFRESH, "width": WIDTH, "height": HEIGHT, "error": None,
               "geoip": None, "visitors": [], "places": []}
    try:
        context.update(_map_data())
    except Unavailable as error:
        context["error"] = str(error)
    return render(request, runtime.get().settings.map_template, context)


@staff_required
def map_data(request):
    try:
        return JsonResponse(_map_data())
    except Unavailable as error:
        return JsonResponse({"error": str(error)}, status=502)


@staff_required
def live(request):
    context = {"data_url": reverse("tracking-live-data"), "refresh_seconds": LIVE_REFRESH,
               "error": None, "counts": None, "visitors": []}
    try:
        context.update(_live_data())
    except Unavailable as error:
        context["error"] = str(error)
    return render(request, "tracking/live.html", context)


@staff_required
def live_data(request):
    try:
        return JsonResponse(_live_data())
    except Unavailable as error:
        return JsonResponse({"error": str(error)}, status=502)


_world: tuple[str, bytes] | None = None
_world_lock = threading.Lock()


def world(request):
    """The agent's world map (a public asset of the agent), fetched once per process."""
    global _world
    if _world is None:
        try:
            fetched = runtime.get().agent.get_bytes("/assets/world.svg")
        except AgentUnavailable as error:
            return HttpResponse(f"the agent did not answer: {error}\n", status=502,
                                content_type="text/plain; charset=utf-8")
        with _world_lock:
            _world = fetched
    content_type, body = _world
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "max-age=86400"
    return response


def asset(request, name: str):
    content_type = ASSETS.get(name)
    if content_type is None:
        raise Http404("no such asset")
    body = resources.files("tracking").joinpath("assets").joinpath(name).read_bytes()
    response = HttpResponse(body, content_type=content_type)
    response["Cache-Control"] = "max-age=300"
    return response
