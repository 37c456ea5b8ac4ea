"""``path('tracking/', include('tracking.urls'))``: the visitor map at ``map/`` and the live
list at ``live/``, for staff users, with the data they refresh from."""

from django.urls import path

from . import views

urlpatterns = [
    path("map/", views.visitor_map, name="tracking-visitor-map"),
    path("map/data/", views.map_data, name="tracking-map-data"),
    path("live/", views.live, name="tracking-live"),
    path("live/data/", views.live_data, name="tracking-live-data"),
    path("world.svg", views.world, name="tracking-world"),
    path("assets/<str:name>", views.asset, name="tracking-asset"),
]
