"""Staff sign-in: the admin login form with an optional two-factor code, and a log line
for every sign-in, failure, sign-out and lockout.

Connected by civicdesk/urls.py, which installs the form on the admin site: every password
sign-in goes through the admin login, so the receivers are in place before the first one.
"""

import logging

from axes.signals import user_locked_out
from django import forms
from django.conf import settings
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db import transaction
from django.dispatch import receiver
from django.utils.translation import gettext_lazy as _
from django_otp import devices_for_user
from django_otp.forms import otp_verification_failed

logger = logging.getLogger(__name__)


def client_ip(request) -> str:
    """The client's address as the intake throttle sees it (also used by django-axes)."""
    if request is None:
        return ""
    from .views import _client_ip

    return _client_ip(request)


class StaffLoginForm(AdminAuthenticationForm):
    """The admin login with a code from an authenticator app (TOTP, django-otp).

    Staff with a confirmed device must give its current code; staff without one sign in with
    their password alone, unless REQUIRE_STAFF_2FA is on, which refuses them until an
    administrator has set up a device for them.
    """

    otp_token = forms.CharField(
        label=_("Authentication code"),
        required=False,
        max_length=16,
        help_text=_("Only if you have set up two-factor sign-in."),
        widget=forms.TextInput(
            attrs={"autocomplete": "one-time-code", "inputmode": "numeric", "size": 8}
        ),
    )

    error_messages = {
        **AdminAuthenticationForm.error_messages,
        "token_required": _("Enter the code from your authenticator app."),
        "invalid_token": _("That code is not valid. Wait for the next one and try again."),
        "device_required": _(
            "Two-factor sign-in is required. Ask an administrator to set up your authenticator app."
        ),
    }

    def clean(self):
        cleaned = super().clean()
        user = self.get_user()
        if user is not None:
            self._check_second_factor(user)
        return cleaned

    def _check_second_factor(self, user):
        token = "".join(self.cleaned_data.get("otp_token", "").split())
        with transaction.atomic():
            # Locked, so that the device's replay and failure counters hold under two
            # attempts at once.
            devices = list(devices_for_user(user, confirmed=True, for_verify=True))
            if not devices:
                if settings.REQUIRE_STAFF_2FA:
                    raise forms.ValidationError(
                        self.error_messages["device_required"], code="device_required"
                    )
                return
            if not token:
                raise forms.ValidationError(
                    self.error_messages["token_required"], code="token_required"
                )
            # Staff rarely have more than one device; a code is tried on each in turn.
            device = next((d for d in devices if d.verify_token(token)), None)
        if device is None:
            otp_verification_failed.send(sender=type(self), user=user)
            raise forms.ValidationError(self.error_messages["invalid_token"], code="invalid_token")
        # django_otp's user_logged_in receiver stores the device in the session.
        user.otp_device = device


def _log(level, message, *, event, username, request, **fields):
    ip = client_ip(request)
    logger.log(
        level,
        message + " (username=%s ip=%s)",
        username or "-",
        ip or "-",
        extra={"event": event, "username": username, "ip": ip, **fields},
    )


@receiver(user_logged_in, dispatch_uid="civicdesk_log_login")
def log_login(sender, request, user, **kwargs):
    verified = getattr(user, "otp_device", None) is not None
    _log(
        logging.INFO,
        "Sign-in succeeded",
        event="login",
        result="success",
        two_factor=verified,
        username=user.get_username(),
        request=request,
    )


@receiver(user_login_failed, dispatch_uid="civicdesk_log_login_failed")
def log_login_failed(sender, credentials, request=None, **kwargs):
    _log(
        logging.WARNING,
        "Sign-in failed",
        event="login_failed",
        result="failure",
        username=credentials.get("username", ""),
        request=request,
    )


@receiver(user_logged_out, dispatch_uid="civicdesk_log_logout")
def log_logout(sender, request, user, **kwargs):
    _log(
        logging.INFO,
        "Signed out",
        event="logout",
        result="success",
        username=user.get_username() if user is not None else "",
        request=request,
    )


@receiver(otp_verification_failed, dispatch_uid="civicdesk_log_otp_failed")
def log_otp_failed(sender, user, **kwargs):
    logger.warning(
        "Two-factor code refused (username=%s)",
        user.get_username(),
        extra={"event": "otp_failed", "result": "failure", "username": user.get_username()},
    )


@receiver(user_locked_out, dispatch_uid="civicdesk_log_lockout")
def log_lockout(sender, request, username, ip_address, **kwargs):
    logger.warning(
        "Sign-in locked out after too many failures (username=%s ip=%s)",
        username or "-",
        ip_address or "-",
        extra={
            "event": "lockout",
            "result": "locked_out",
            "username": username,
            "ip": ip_address,
        },
    )
