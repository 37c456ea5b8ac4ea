import os
import time

from django.contrib.auth import login
from django.contrib.auth.models import User
from django.http import HttpResponse
from django.shortcuts import get_object_or_404, render


def _worker(response):
    # Which gunicorn worker answered: the test checks that several did.
    response["X-Worker"] = str(os.getpid())
    return response


def page(request, rest=""):
    """Every page shows the seed's template tags; visiting one keeps a session."""
    request.session["views"] = request.session.get("views", 0) + 1
    return _worker(render(request, "example/page.html", {"path": request.path}))


def enter(request, username):
    """Logs in as a user of the example site (the end-to-end test's way in)."""
    login(request, get_object_or_404(User, username=username))
    return _worker(HttpResponse(f"hello {username}\n", content_type="text/plain"))


def slow(request):
    time.sleep(0.05)
    return _worker(HttpResponse("slow\n", content_type="text/plain"))


def bench(request):
    """The benchmark's page: a template and nothing that calls the agent, so that with and
    without the middleware the same work is done but for the middleware's."""
    return render(request, "example/bench.html", {"path": request.path})
