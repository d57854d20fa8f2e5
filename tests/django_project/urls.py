"""URLs of the test project: the adapter's include and the conformance views."""

from __future__ import annotations

from django.urls import include, path

from . import views

urlpatterns = [
    path("", include("ilp_receiver_django.urls")),
    path("decorated", views.decorated),
    path("async-decorated", views.async_decorated),
    path("listed", views.listed),
    path("both", views.both),
    path("raise", views.raises),
    path("forbidden", views.forbidden),
    path("missing", views.missing),
    path("unavailable", views.unavailable),
    path("stream", views.stream),
    path("broken-stream", views.broken_stream),
    path("bytes", views.body_bytes),
    path("echo", views.echo),
    path("echo-listed", views.echo_listed),
    path("premium/<str:item>", views.premium),
    path("reports/<str:name>", views.Report.as_view()),
    path("monetized", views.monetized_view),
    path("page", views.page),
    path("wallet-page", views.wallet_page),
]
