from django.apps import AppConfig
from django.utils.translation import gettext_lazy as _


class RequestsAppConfig(AppConfig):
    name = "requests_app"
    verbose_name = _("Service requests")

    def ready(self):
        from . import lookups  # noqa: F401  (registers field__any_of)
        from .category_cache import connect_signals

        connect_signals()
