"""``{% load tracking_tags %}``: django-user-tracking's two tags, as its documentation uses them.

    {% visitors_on_site as visitors %}
    {{ visitors }} active user{{ visitors|pluralize }}

    {% visitors_on_page as same_page %}
    {{ same_page }} of {{ visitors }} active user{{ visitors|pluralize }}

Without ``as name`` a tag renders the number. ``visitors_on_page`` counts the visitors whose last
page is the current request's path, so the request must be in the context
(``django.template.context_processors.request``).
"""

from django import template
from django.core.exceptions import ImproperlyConfigured

from tracking import runtime

register = template.Library()


@register.simple_tag
def visitors_on_site():
    return runtime.get().active().counts(None)["visitors"]


@register.simple_tag(takes_context=True)
def visitors_on_page(context):
    request = context.get("request")
    if request is None:
        raise ImproperlyConfigured(
            "tracking: {% visitors_on_page %} needs the request in the template context: add "
            "'django.template.context_processors.request' to the template engine's "
            "context_processors"
        )
    return runtime.get().active().counts(request.path)["visitors"]
