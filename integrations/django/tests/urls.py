from django.http import HttpResponse
from django.template import engines
from django.urls import include, path


def page(request, rest=""):
    # Touching the session makes one, as a real site's first page often does.
    request.session["seen"] = request.session.get("seen", 0) + 1
    return HttpResponse("ok")


def tags(request, rest=""):
    template = engines["django"].from_string(
        "{% load tracking_tags %}{% visitors_on_site as visitors %}{% visitors_on_page as same_page %}"
        "{{ same_page }} of {{ visitors }}")
    return HttpResponse(template.render({}, request))


def broken(request):
    raise RuntimeError("the view failed")


urlpatterns = [
    path("tracking/", include("tracking.urls")),
    path("tags/<path:rest>", tags),
    path("broken/", broken),
    path("", page),
    path("<path:rest>", page),
]
