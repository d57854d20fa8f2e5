"""``path("", include("ilp_receiver_django.urls"))``: the payment pointer at
``/.well-known/pay``, one at ``/<name>`` for each of ``ILP_RECEIVER['POINTERS']``, the Web
Monetization endpoints under ``ILP_MONETIZATION['PREFIX']`` (``/__monetizer``) when Web
Monetization is on, and the health report at ``ILP_RECEIVER['HEALTH_PATH']`` when set.

The patterns are made from the settings when this module is imported.
"""

from __future__ import annotations

import re

from django.urls import URLPattern, path, re_path

from ilp_receiver.monetization import ENDPOINT_PREFIX

from . import _monetizer_settings, receiver_options, views

app_name = "ilp_receiver"


def _patterns() -> list[URLPattern]:
    options = receiver_options()
    patterns: list[URLPattern] = []
    if options.well_known:
        patterns.append(path(".well-known/pay", views.payment_pointer, name="pointer"))
    for name in options.pointers:
        patterns.append(path(name, views.payment_pointer, {"name": name}, name=f"pointer-{name}"))
    monetization = _monetizer_settings()
    if monetization is not None:
        prefix = str(monetization.get("PREFIX", ENDPOINT_PREFIX)).strip("/")
        patterns.append(
            re_path(
                rf"^{re.escape(prefix)}(?P<rest>/.*)?$", views.monetization, name="monetization"
            )
        )
    if options.health_path:
        patterns.append(path(options.health_path.lstrip("/"), views.health, name="health"))
    return patterns


urlpatterns = _patterns()
