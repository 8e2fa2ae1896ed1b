from django.core.checks import Warning, register
from django.urls import NoReverseMatch, reverse


@register()
def signed_link_urls_mounted(app_configs, **kwargs):
    """Emails carry links to these views; without them the links lead nowhere."""
    problems = []
    for name, include in [
        ("notifications:unsubscribe", 'path("notifications/", include("notifications.urls"))'),
        ("surveys:answer", 'path("surveys/", include("surveys.urls"))'),
        ("resident:sign_in", 'path("my/", include("notifications.resident_urls"))'),
    ]:
        try:
            reverse(name, args=["x"])
        except NoReverseMatch:
            problems.append(
                Warning(
                    f"{name} is not mounted: links in emails will not work.",
                    hint=f"Add {include} to civicdesk/urls.py.",
                    id="notifications.W001",
                )
            )
    return problems
