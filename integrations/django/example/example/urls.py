from django.urls import include, path

from . import views

urlpatterns = [
    path("tracking/", include("tracking.urls")),
    path("enter/<str:username>/", views.enter),
    path("slow/", views.slow),
    path("bench/", views.bench),
    path("", views.page),
    path("<path:rest>", views.page),
]
