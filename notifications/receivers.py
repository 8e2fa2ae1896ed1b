"""anymail's webhook signals, handed straight to services (no logic here)."""

from anymail.signals import inbound, tracking
from django.dispatch import receiver

from . import inbound as inbound_email
from . import services


@receiver(tracking, dispatch_uid="notifications.delivery_event")
def on_delivery_event(sender, event, esp_name, **kwargs):
    services.delivery_event_record(event)


@receiver(inbound, dispatch_uid="notifications.inbound_email")
def on_inbound_email(sender, event, esp_name, **kwargs):
    inbound_email.inbound_email_receive(event.message)
