"""The Django app: checks the settings at start-up (and the uplink, with
``REQUIRE_UPLINK``)."""

from __future__ import annotations

from django.apps import AppConfig


class IlpReceiverConfig(AppConfig):
    """``INSTALLED_APPS = [..., "ilp_receiver_django"]``."""

    name = "ilp_receiver_django"
    label = "ilp_receiver"
    verbose_name = "ilp-receiver"

    def ready(self) -> None:
        """Refuse bad settings now (ConfigError naming ``ILP_RECEIVER['KEY']``); with
        ``REQUIRE_UPLINK``, in a process that serves requests, try the uplink."""
        from . import _serving, check_uplink, receiver_options

        receiver_options()
        if _serving():
            check_uplink()
