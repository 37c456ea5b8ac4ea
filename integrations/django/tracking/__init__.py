"""django-user-tracking's middleware, template tags and visitor map, backed by the ``tracking``
host agent: ``INSTALLED_APPS += ['tracking']`` and the seed's middleware names keep working.

- ``middleware``: ``BannedIPMiddleware``, ``VisitorTrackingMiddleware``,
  ``VisitorCleanUpMiddleware``.
- ``templatetags.tracking_tags``: ``{% visitors_on_site %}``, ``{% visitors_on_page %}``.
- ``urls``: ``map/`` and ``live/`` for staff.
- ``conf``: the settings, checked whole; ``checks``: Django system checks.
- ``address``: the client's address behind trusted proxies.
- ``agent``: calls to the agent's API; ``sender``: the background visit sender; ``bans``: the
  ban check cache; ``active``: the counts cache; ``runtime``: what a process shares.
"""
