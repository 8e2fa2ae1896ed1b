"""Every URL CivicDesk serves, visited by every role, answered as the role matrix says.

The URL resolver is walked, the Django admin included (every registered ModelAdmin's list,
add, change, history and delete pages, and the views added with get_urls), and each
pattern must be in one of two explicit tables: URLS (pattern name, or route when unnamed →
cases) or ADMIN_MODELS (registered model → who may view, add, change and delete it, and
who finds the visited object in the admin's queryset). A new pattern or ModelAdmin missing
from them fails test_every_url_pattern_is_classified, so no view slips in unchecked.

A case is one concrete URL, filled from one seeded world, and an access class: what each
role gets for a GET and, where the view changes state, what a POST from a role without
the right gets. Such a refused POST must change nothing: not one row inserted, updated or
deleted anywhere (the connection's own write counter), and the row it aimed at unchanged.
test_the_same_post_works_for_a_role_with_the_right shows those payloads do work when
allowed, so "nothing changed" means "refused".

Outcomes are a status code, LOGIN (sent to the staff login), ADMIN_INDEX (the admin's
redirect to its index: its "does not exist" for an object outside the user's scope) or
REDIRECT (any other redirect). test_role_matrix.py follows the main actions in depth; this
is the breadth: every URL, every role.
"""

import io
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import time, timedelta
from types import SimpleNamespace

import pytest
from axes.models import AccessAttempt, AccessFailureLog, AccessLog
from django.conf import settings
from django.contrib import admin
from django.contrib.admin.utils import quote
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.contrib.contenttypes.models import ContentType
from django.core.files.base import ContentFile
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, transaction
from django.test import Client, override_settings
from django.urls import URLResolver, get_resolver, resolve, reverse
from django.utils import timezone
from django_otp.plugins.otp_totp.models import TOTPDevice

from notifications.links import new_signin_token, unsubscribe_token
from notifications.models import (
    DigestRun,
    InboundEmail,
    Notification,
    ResidentSignInLink,
    ServiceNotice,
    SuppressedAddress,
)
from requests_app.dashboard import Filters
from requests_app.links import withdraw_token
from requests_app.models import (
    ApiClient,
    Crew,
    ExportJob,
    Follower,
    Photo,
    ServiceAttribute,
    ServiceRequest,
    SLAPolicy,
    StaffRole,
    Status,
    WorkingCalendar,
    WorkOrder,
)
from requests_app.open311 import api_client_issue_key, request_token
from routing.models import District, RoutingRule, RoutingRuleChange
from surveys.links import survey_token
from surveys.models import ReviewTask, Survey

from .factories import (
    CITY_CENTER,
    CategoryFactory,
    DepartmentFactory,
    ServiceRequestFactory,
    staff_user,
)
from .photos import make_image

pytestmark = [
    pytest.mark.django_db,
    # Visiting every provider's webhook wakes anymail's notices about the old ones.
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailNotSupportedWarning"),
    pytest.mark.filterwarnings("ignore::anymail.exceptions.AnymailDeprecationWarning"),
]

# --- Roles ------------------------------------------------------------------------------------

ANONYMOUS = "anonymous"
RESIDENT = "resident"  # signed in to "My requests" by an emailed link: a session, no account
USER = "user"  # a Django account without is_staff
ROLES = [ANONYMOUS, RESIDENT, USER, "dispatcher", "streets", "parks", "crew", "director", "admin"]
NON_STAFF = frozenset({ANONYMOUS, RESIDENT, USER})
STAFF = frozenset(ROLES) - NON_STAFF
NOBODY = frozenset()
SUPERUSER = frozenset({"admin"})
# requests_app.access: who acts on requests, who sees which, who sees which work order.
EDITORS = frozenset({"dispatcher", "streets", "parks", "admin"})
SEE_STREETS = frozenset({"dispatcher", "streets", "director", "admin"})
SEE_PARKS = frozenset({"dispatcher", "parks", "director", "admin"})
STREETS_ORDER = SEE_STREETS | {"crew"}  # the crew member is on this work order's crew
# requests_app.dashboard_views.
DASHBOARD = frozenset({"dispatcher", "director", "admin"})
EXPORTERS = DASHBOARD | {"streets", "parks"}
# notifications.admin.NotificationAdmin: dispatch resends failed emails, directors look.
OUTBOX_READERS = frozenset({"dispatcher", "director", "admin"})
OUTBOX_SENDERS = frozenset({"dispatcher", "admin"})

# --- Outcomes ---------------------------------------------------------------------------------

LOGIN = "login"
ADMIN_INDEX = "admin-index"
REDIRECT = "redirect"
# A refused admin action may show the list again or redirect to it: what matters is that it
# changed nothing.
ANY_REFUSAL = (200, REDIRECT, ADMIN_INDEX, 403, 404)
# Answers that refuse: whatever asked for them must have changed nothing, GETs included.
REFUSALS = {LOGIN, ADMIN_INDEX, 400, 401, 403, 404, 405}


def outcome(response):
    if response.status_code in (301, 302, 303, 307):
        location = response["Location"]
        if location.startswith(reverse("admin:login")):
            return LOGIN
        if location == reverse("admin:index"):
            return ADMIN_INDEX
        return REDIRECT
    return response.status_code


def matches(got, expected):
    return got in expected if isinstance(expected, tuple) else got == expected


# --- Access classes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    """What a GET answers to each role; what a POST answers to each role refused it."""

    name: str
    get: dict
    post: dict = field(default_factory=dict)


def each(outcome_for_all, **by_role):
    return {role: by_role.get(role, outcome_for_all) for role in ROLES}


def staff_only(for_staff: Callable[[str], object], non_staff=LOGIN):
    """Admin pages: whoever is not staff is sent to the login first."""
    return {role: non_staff if role in NON_STAFF else for_staff(role) for role in ROLES}


def login_required(for_signed_in: Callable[[str], object]):
    """@login_required views: any account gets past the login (a resident has none)."""
    return {role: LOGIN if role in (ANONYMOUS, RESIDENT) else for_signed_in(role) for role in ROLES}


def refused_login_required(**by_role):
    return {ANONYMOUS: LOGIN, RESIDENT: LOGIN, **by_role}


PUBLIC = Access("public", each(200))
PUBLIC_REDIRECT = Access("public redirect", each(REDIRECT))
NOT_PUBLIC = Access("not public: 404 for everyone, staff included", each(404))
HEALTH = Access("public health check (503 while no worker beats)", each((200, 503)))
RESIDENT_PAGE = Access(
    "resident: My requests (the list only for the signed-in resident)", each(200)
)
POST_ONLY_PUBLIC = Access("POST only, anyone", each(405))
TOKEN_VALID = Access("token-protected, valid token", each(200))
TOKEN_GARBAGE = Access("token-protected, garbage token", each(400), post=each(400))
API_SUBMIT = Access(
    "Open311: GET public, POST needs an api_key (a staff session is no key)",
    each(200),
    post=each(403),
)
API_NOT_FOUND = Access("Open311: unknown resource", each(404))
WEBHOOK = Access(
    "email provider webhook: POST with the shared secret or the provider's signature only",
    each((405, 200)),  # Unisender Go answers its own GET check
    post=each((400, 401)),
)
STAFF_ANY = Access("staff: any role", staff_only(lambda role: 200))
STAFF_OWN_PASSWORD = Access(
    "staff: any role, for their own account",
    staff_only(lambda role: 200),
    post=dict.fromkeys(NON_STAFF, LOGIN),
)
SUPERUSER_ONLY = Access(
    "administrator only (Django's model permissions)",
    staff_only(lambda role: 200 if role in SUPERUSER else 403),
    post=dict.fromkeys(NON_STAFF, LOGIN) | dict.fromkeys(STAFF - SUPERUSER, 403),
)
SUPERUSER_APP = Access(
    "administrator only (an admin app index)",
    staff_only(lambda role: 200 if role in SUPERUSER else 404),
)
ADMIN_LOGIN = Access(
    "admin login (signed-in staff go to the index)",
    {role: 200 if role in NON_STAFF else ADMIN_INDEX for role in ROLES},
)
ADMIN_LOGOUT = Access(
    "admin logout (POST only; strangers go to the index)",
    staff_only(lambda role: 405, non_staff=ADMIN_INDEX),
)
ADMIN_UNKNOWN = Access("admin: no such page", staff_only(lambda role: 404))
VIEW_ON_SITE = Access(
    "admin 'view on site' of a hidden Streets request: scoped like the request",
    staff_only(lambda role: REDIRECT if role in SEE_STREETS else 404),
)
DASHBOARD_PAGE = Access(
    "dashboard: dispatch, director, administrator",
    login_required(lambda role: 200 if role in DASHBOARD else 404),
)
EXPORT = Access(
    "staff export: dispatch, director, administrator, department staff (own department)",
    login_required(lambda role: 200 if role in EXPORTERS else 404),
)
EXPORT_IN_BACKGROUND = Access(
    "staff export in the background (a GET that creates a job)",
    login_required(lambda role: REDIRECT if role in EXPORTERS else 404),
)
EXPORT_JOB = Access(
    "export job: the dispatcher who asked for it, nobody else",
    login_required(lambda role: 200 if role == "dispatcher" else 404),
)
STREETS_RECORD = Access(
    "audit package of a Streets request: exporters who see the request",
    login_required(lambda role: 200 if role in EXPORTERS & SEE_STREETS else 404),
)
CREW_HOME = Access("crew: own work list (empty for others)", login_required(lambda role: 200))
CREW_ORDER = Access(
    "crew: a work order of the crew member's crew",
    login_required(lambda role: 200 if role in STREETS_ORDER else 404),
)
OTHER_CREW_ORDER = Access(
    "crew: another Streets crew's work order",
    login_required(lambda role: 200 if role in SEE_STREETS else 404),
)
CREW_ACTION = Access(
    "crew: act on the crew's work order (POST only; the director only looks)",
    login_required(lambda role: 405),
    post=refused_login_required(user=404, parks=404, director=403),
)
OTHER_CREW_ACTION = Access(
    "crew: act on another Streets crew's work order",
    login_required(lambda role: 405),
    post=refused_login_required(user=404, parks=404, crew=404, director=403),
)
PHOTO_HELD = Access(
    "resident's photo held back: staff who see the request, and its work order's crew",
    each(404, **dict.fromkeys(STREETS_ORDER, 200)),
)
PHOTO_OF_WORK = Access(
    "crew's photo on a work order: those who see the work order",
    each(404, **dict.fromkeys(STREETS_ORDER, 200)),
)

# --- The world --------------------------------------------------------------------------------

RESIDENT_EMAIL = "maria@example.org"  # ServiceRequestFactory's reporter
FOLLOWER_EMAIL = "quiet.neighbour@private.example"
INTERNAL_NOTE = "Internal: gate code 4471, the reporter is the landlord"
# What a city sets for its provider (README: ANYMAIL_WEBHOOK_SECRET), plus the signing keys
# without which the other providers' webhooks do not even start.
ANYMAIL_SETTINGS = {
    "WEBHOOK_SECRET": "hook:long-random-secret",
    **dict.fromkeys(
        [
            "BREVO_API_KEY",
            "MAILERSEND_INBOUND_SECRET",
            "MAILERSEND_SIGNING_SECRET",
            "MAILGUN_WEBHOOK_SIGNING_KEY",
            "MAILTRAP_API_TOKEN",
            "MANDRILL_WEBHOOK_KEY",
            "POSTAL_WEBHOOK_KEY",
            "RESEND_API_KEY",
            "SENDINBLUE_API_KEY",
            "UNISENDER_GO_API_KEY",
        ],
        "not-what-the-caller-knows",
    ),
}


def jpeg(name):
    return SimpleUploadedFile(name, make_image(size=(64, 48)), content_type="image/jpeg")


def build_world(media_root):
    w = SimpleNamespace(media_root=media_root, resident_email=RESIDENT_EMAIL)
    w.streets = DepartmentFactory(slug="streets", name="Streets")
    w.parks = DepartmentFactory(slug="parks", name="Parks")
    w.pothole = CategoryFactory(code="pothole", name="Pothole", department=w.streets)
    w.bench = CategoryFactory(code="bench", name="Broken bench", group="Parks", department=w.parks)
    w.users = {
        USER: get_user_model().objects.create_user("neighbour", "neighbour@example.org"),
        "dispatcher": staff_user("dispatcher", StaffRole.DISPATCHER),
        "streets": staff_user("streets", StaffRole.DEPARTMENT_STAFF, w.streets),
        "parks": staff_user("parks", StaffRole.DEPARTMENT_STAFF, w.parks),
        "crew": staff_user("crew", StaffRole.CREW, w.streets),
        "director": staff_user("director", StaffRole.DIRECTOR),
        "admin": staff_user("admin", StaffRole.ADMINISTRATOR),
    }
    dispatcher = w.users["dispatcher"]
    w.streets_crew = Crew.objects.create(name="Streets crew 1", department=w.streets)
    w.streets_crew.members.add(w.users["crew"])
    w.other_streets_crew = Crew.objects.create(name="Streets crew 2", department=w.streets)
    w.parks_crew = Crew.objects.create(name="Parks crew 1", department=w.parks)

    def reported(category, department, name, email, phone, text):
        return ServiceRequestFactory(
            category=category,
            department=department,
            description=text,
            reporter_name=name,
            reporter_email=email,
            reporter_phone=phone,
        )

    w.public = ServiceRequestFactory(category=w.pothole, department=w.streets)  # the resident's
    w.hidden = reported(
        w.pothole,
        w.streets,
        "Hester Hidewell",
        "hester@private.example",
        "617-555-0199",
        "Broken kerb behind the school",
    )
    w.hidden.set_public(False, by=dispatcher, reason="On private land")
    w.sidewalk = reported(
        w.pothole, w.streets, "Sid Walker", "sid@private.example", "617-555-0111", "Sidewalk"
    )
    w.park_request = reported(
        w.bench, w.parks, "Paolo Parkes", "paolo@private.example", "617-555-0123", "Bench slats"
    )
    w.order = WorkOrder.create_for([w.public, w.hidden], crew=w.streets_crew, by=dispatcher)
    w.other_order = WorkOrder.create_for([w.sidewalk], crew=w.other_streets_crew, by=dispatcher)
    for name in ("public", "hidden", "sidewalk", "park_request", "order", "other_order"):
        getattr(w, name).refresh_from_db()
    w.internal_note = w.hidden.add_comment(INTERNAL_NOTE, by=dispatcher, public=False)
    w.public.add_comment("Crew on site tomorrow morning.", by=dispatcher, public=True)
    w.follower = Follower.objects.create(
        request=w.public, email=FOLLOWER_EMAIL, source=Follower.Source.FOLLOW
    )

    def photo(**fields):
        return Photo.objects.create(image=jpeg("p.jpg"), thumbnail=jpeg("t.jpg"), **fields)

    w.public_photo = photo(request=w.public, is_public=True)
    w.held_photo = photo(request=w.public, is_public=False)  # waiting for staff approval
    w.order_photo = photo(work_order=w.order, kind=Photo.Kind.BEFORE, is_public=False)

    w.export_job = ExportJob.objects.create(
        requested_by=dispatcher,
        filters=Filters.from_query({}).as_dict(),
        status=ExportJob.Status.DONE,
        rows_total=4,
        rows_done=4,
    )
    w.export_job.file.save("requests.csv", ContentFile(b"tracking_number\n"), save=True)
    w.survey = Survey.objects.create(request=w.public, recipient=RESIDENT_EMAIL)
    w.review = ReviewTask.objects.create(
        survey=w.survey, request=w.public, rating=1, is_fixed=False, comment="Still there"
    )
    w.api_client = ApiClient(name="Resident app", requests_per_minute=1000)
    w.api_key = api_client_issue_key(w.api_client)
    w.failed_email = Notification.objects.create(
        request=w.hidden,
        recipient="hester@private.example",
        kind=Notification.Kind.STATUS,
        language="en",
        subject="Your request",
        body_text="Hello",
        status=Notification.Status.FAILED,
        attempts=8,
    )
    w.suppressed = SuppressedAddress.objects.create(
        email="bounced@example.org", reason=SuppressedAddress.Reason.BOUNCED
    )
    w.inbound = InboundEmail.objects.create(
        message_id="<1@mail.example>",
        sender="hester@private.example",
        subject="Re: your request",
        outcome=InboundEmail.Outcome.COMMENT,
        request=w.hidden,
    )
    w.digest = DigestRun.objects.create(department=w.streets, date=timezone.localdate())
    lat, lng = CITY_CENTER
    w.notice = ServiceNotice.objects.create(
        title="Paving on Main St",
        message="Expect delays",
        center_lat=lat,
        center_lng=lng,
        radius_m=300,
    )
    ring = [[lng - 0.05, lat - 0.05], [lng + 0.05, lat - 0.05], [lng + 0.05, lat + 0.05]]
    w.district = District.objects.create(
        name="Harborside",
        code="harborside",
        boundary={"type": "Polygon", "coordinates": [[*ring, ring[0]]]},
    )
    w.rule = RoutingRule.objects.create(name="Potholes to Streets", department=w.streets)
    w.rule_change = RoutingRuleChange.objects.create(
        rule=w.rule, rule_name=w.rule.name, user=w.users["admin"], action="created"
    )
    w.calendar = WorkingCalendar.objects.create(name="Office hours", day_starts=time(8))
    w.sla_policy = SLAPolicy.objects.create(name="Potholes", acknowledge_hours=24, resolve_hours=72)
    w.attribute = ServiceAttribute.objects.create(
        category=w.pothole,
        code="depth",
        description="Depth in cm",
        datatype=ServiceAttribute.Datatype.NUMBER,
    )
    w.group = Group.objects.create(name="Dispatch desk")
    w.totp_device = TOTPDevice.objects.create(user=dispatcher, name="phone", confirmed=True)
    seen = {
        "username": "dispatcher",
        "ip_address": "192.0.2.7",
        "user_agent": "Firefox",
        "http_accept": "*/*",
        "path_info": "/admin/login/",
    }
    w.access_attempt = AccessAttempt.objects.create(
        **seen, get_data="", post_data="username=dispatcher", failures_since_start=2
    )
    w.access_log = AccessLog.objects.create(**seen)
    w.access_failure = AccessFailureLog.objects.create(**seen, locked_out=False)

    # Tokens from the project's own link helpers, as the emails carry them.
    w.withdraw_token = withdraw_token(w.public.pk)
    w.unsubscribe_token = unsubscribe_token(w.public.pk, FOLLOWER_EMAIL)
    w.survey_token = survey_token(w.survey.pk)
    w.signin_token, w.signin_link = signin_link(RESIDENT_EMAIL)

    w.secrets = sorted(
        {
            value
            for r in ServiceRequest.objects.all()
            for value in (r.reporter_name, r.reporter_email, r.reporter_phone)
        }
        | {FOLLOWER_EMAIL, INTERNAL_NOTE}
    )
    w.sessions = sessions(w)
    return w


def signin_link(email):
    token, token_hash = new_signin_token()
    link = ResidentSignInLink.objects.create(
        email=email, token_hash=token_hash, expires_at=timezone.now() + timedelta(minutes=30)
    )
    return token, link


# One client for the module: each new one loads the middleware again, and WhiteNoise then
# indexes every static file (a quarter of a second each time).
CLIENT = Client(raise_request_exception=False)


def sessions(w):
    """A session cookie per role: force_login for accounts; for the resident, the real
    "My requests" sign-in (an emailed link, used once), which puts the verified address in
    the session (notifications.resident.SESSION_KEY)."""
    cookies = {ANONYMOUS: None}
    for role, user in w.users.items():
        CLIENT.cookies.clear()
        CLIENT.force_login(user)
        cookies[role] = CLIENT.cookies[settings.SESSION_COOKIE_NAME].value
    token, _link = signin_link(RESIDENT_EMAIL)
    CLIENT.cookies.clear()
    signed_in = CLIENT.post(reverse("resident:sign_in", args=[token]))
    assert signed_in.status_code == 302, signed_in
    cookies[RESIDENT] = CLIENT.cookies[settings.SESSION_COOKIE_NAME].value
    return cookies


def client_for(w, role):
    """The client, carrying nothing but `role`'s session cookie."""
    CLIENT.cookies.clear()
    if w.sessions[role]:
        CLIENT.cookies[settings.SESSION_COOKIE_NAME] = w.sessions[role]
    return CLIENT


@pytest.fixture(scope="module")
def world(django_db_setup, django_db_blocker, tmp_path_factory):
    """Built once for the module, in a transaction rolled back at its end; each test runs in
    a savepoint inside it (pytest-django's db), so what one test changes is undone."""
    media_root = tmp_path_factory.mktemp("url-matrix-media")
    with django_db_blocker.unblock(), override_settings(MEDIA_ROOT=media_root):
        with transaction.atomic():
            yield build_world(media_root)
            transaction.set_rollback(True)


@pytest.fixture
def w(world, _media_root, settings):
    settings.MEDIA_ROOT = world.media_root  # conftest gives each test an empty one otherwise
    settings.ANYMAIL = ANYMAIL_SETTINGS
    return world


# --- Cases ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One concrete URL of a pattern, and its access class.

    kwargs fill the pattern's parameters from the world (unnamed patterns give `path`);
    post_data is what a POST sends, chosen to take effect if allowed; watch reads what that
    POST aims at, which a refused one must leave as it was; check looks into a 200 answer
    (who sees which rows; no personal data on public pages).
    """

    access: Access
    kwargs: Callable = lambda w: {}
    query: str | Callable = ""
    label: str = ""
    path: Callable | None = None
    post_data: Callable = lambda w: {}
    watch: Callable = lambda w: None
    check: Callable | None = None
    # Only the POST is new (another action of an admin list already visited).
    post_only: bool = False


def body(response) -> str:
    if response.streaming:
        return b"".join(response.streaming_content).decode("utf-8", "replace")
    return response.content.decode("utf-8", "replace")


def no_personal_data(role, response, w):
    text = body(response).lower()
    leaked = [secret for secret in w.secrets if secret.lower() in text]
    return f"personal data on a public page: {leaked}" if leaked else None


def shows_only_to(markers: Callable[[SimpleNamespace], dict]):
    """A check: each marker text (world → {text: roles}) is in the page for those roles only."""

    def check(role, response, w):
        text = body(response)
        wrong = [
            f"{'shows' if shown else 'lacks'} {marker!r}"
            for marker, roles in markers(w).items()
            if (shown := marker in text) != (role in roles)
        ]
        return "; ".join(wrong) or None

    return check


def zip_without_personal_data(role, response, w):
    archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
    text = " ".join(
        archive.read(name).decode("utf-8", "replace")
        for name in archive.namelist()
        if not name.endswith((".jpg", ".jpeg", ".png"))
    ).lower()
    assert w.hidden.tracking_number.lower() in text
    leaked = [secret for secret in w.secrets if secret.lower() in text]
    return f"personal data in the public audit package: {leaked}" if leaked else None


REQUESTS_BY_SCOPE = shows_only_to(
    lambda w: {w.hidden.tracking_number: SEE_STREETS, w.park_request.tracking_number: SEE_PARKS}
)


def tracking(name):
    return lambda w: {"tracking_number": getattr(w, name).tracking_number}


def pk_of(name):
    return lambda w: {"pk": getattr(w, name).pk}


def row(model, name):
    return lambda w: model.objects.filter(pk=getattr(w, name).pk).values().first()


def open311_submission(w):
    return {
        "service_code": "pothole",
        "lat": CITY_CENTER[0],
        "long": CITY_CENTER[1],
        "description": "Filed through the API",
        "email": "app.user@example.org",
    }


def token_cases(name, *, watch, post_data=lambda w: {}):
    """The emailed link's token as sent, and the same with its signature spoilt."""
    return [
        Case(
            TOKEN_VALID,
            kwargs=lambda w: {"token": getattr(w, name)},
            post_data=post_data,
            watch=watch,
            check=no_personal_data,
        ),
        Case(
            TOKEN_GARBAGE,
            kwargs=lambda w: {"token": getattr(w, name)[:-3] + "xyz"},
            label="garbage token",
            post_data=post_data,
            watch=watch,
        ),
    ]


# django-anymail's webhooks (a view per provider and event stream), under /anymail/.
ANYMAIL_WEBHOOKS = [
    f"anymail:{name}_webhook"
    for name in (
        "amazon_ses_inbound",
        "amazon_ses_tracking",
        "brevo_inbound",
        "brevo_tracking",
        "mailersend_inbound",
        "mailersend_tracking",
        "mailgun_inbound",
        "mailgun_tracking",
        "mailjet_inbound",
        "mailjet_tracking",
        "mailtrap_inbound",
        "mailtrap_tracking",
        "mandrill",
        "mandrill_tracking",
        "postal_inbound",
        "postal_tracking",
        "postmark_inbound",
        "postmark_tracking",
        "resend_inbound",
        "resend_tracking",
        "sendgrid_inbound",
        "sendgrid_tracking",
        "sendinblue_inbound",
        "sendinblue_tracking",
        "sparkpost_inbound",
        "sparkpost_tracking",
        "unisender_go_tracking",
    )
]

URLS = {
    "health": [Case(HEALTH, check=no_personal_data)],
    "csp_report": [Case(POST_ONLY_PUBLIC)],
    "set_language": [Case(PUBLIC_REDIRECT)],
    # The admin's own pages.
    "admin:index": [Case(STAFF_ANY)],
    "admin:login": [Case(ADMIN_LOGIN)],
    "admin:logout": [Case(ADMIN_LOGOUT)],
    "admin:password_change": [
        Case(
            STAFF_OWN_PASSWORD,
            post_data=lambda w: {
                "old_password": "",
                "new_password1": "Taken-over-2024!",
                "new_password2": "Taken-over-2024!",
            },
            watch=lambda w: get_user_model().objects.get(pk=w.users[USER].pk).password,
        )
    ],
    "admin:password_change_done": [Case(STAFF_ANY)],
    "admin:jsi18n": [Case(STAFF_ANY)],
    "admin:autocomplete": [
        # Any staff member may ask; the answer is the requests admin's own queryset.
        Case(
            STAFF_ANY,
            query="app_label=requests_app&model_name=comment&field_name=request&term=",
            label="requests",
            check=REQUESTS_BY_SCOPE,
        ),
        Case(
            Access(
                "administrator only (API clients, through the autocomplete)",
                staff_only(lambda role: 200 if role in SUPERUSER else 403),
            ),
            query="app_label=requests_app&model_name=servicerequest&field_name=api_client&term=",
            label="API clients",
        ),
    ],
    "admin:view_on_site": [
        Case(
            VIEW_ON_SITE,
            kwargs=lambda w: {
                "content_type_id": ContentType.objects.get_for_model(ServiceRequest).pk,
                "object_id": w.hidden.pk,
            },
        )
    ],
    "admin:app_list": [
        Case(STAFF_ANY, kwargs=lambda w: {"app_label": "requests_app"}, label="requests_app"),
        Case(SUPERUSER_APP, kwargs=lambda w: {"app_label": "auth"}, label="auth"),
    ],
    "admin/(?P<url>.*)$": [Case(ADMIN_UNKNOWN, path=lambda w: "/admin/no-such-page/")],
    # Admin views added with get_urls.
    "admin:auth_user_password_change": [
        Case(
            SUPERUSER_ONLY,
            kwargs=lambda w: {"id": w.users[USER].pk},
            post_data=lambda w: {"password1": "Taken-over-2024!", "password2": "Taken-over-2024!"},
            watch=lambda w: get_user_model().objects.get(pk=w.users[USER].pk).password,
        )
    ],
    "admin:otp_totp_totpdevice_config": [Case(SUPERUSER_ONLY, kwargs=pk_of("totp_device"))],
    "admin:otp_totp_totpdevice_qrcode": [Case(SUPERUSER_ONLY, kwargs=pk_of("totp_device"))],
    "admin:routing_simulate": [
        Case(
            STAFF_ANY,
            query=lambda w: f"category={w.pothole.pk}&lat={CITY_CENTER[0]}&lng={CITY_CENTER[1]}",
        )
    ],
    "admin:requests_app_servicerequest_export": [
        Case(
            Access(
                "the request list's CSV: exporters (as the dashboard's), the rows they see",
                staff_only(lambda role: 200 if role in EXPORTERS else 404),
            ),
            check=REQUESTS_BY_SCOPE,
        )
    ],
    # The crew's phone pages.
    "crew:my_work": [
        Case(
            CREW_HOME,
            check=shows_only_to(
                lambda w: {
                    reverse("crew:work_order", args=[w.order.pk]): STREETS_ORDER,
                    reverse("crew:work_order", args=[w.other_order.pk]): SEE_STREETS,
                }
            ),
        )
    ],
    "crew:work_order": [
        Case(CREW_ORDER, kwargs=pk_of("order")),
        Case(OTHER_CREW_ORDER, kwargs=pk_of("other_order"), label="other crew"),
    ],
    "crew:start": [
        Case(CREW_ACTION, kwargs=pk_of("order"), watch=row(WorkOrder, "order")),
        Case(
            OTHER_CREW_ACTION,
            kwargs=pk_of("other_order"),
            label="other crew",
            watch=row(WorkOrder, "other_order"),
        ),
    ],
    "crew:photo": [
        Case(
            CREW_ACTION,
            kwargs=pk_of("order"),
            post_data=lambda w: {"kind": Photo.Kind.AFTER, "photo": jpeg("after.jpg")},
            watch=lambda w: w.order.photos.count(),
        )
    ],
    "crew:complete": [
        Case(
            CREW_ACTION,
            kwargs=pk_of("order"),
            post_data=lambda w: {"resolution_note": "Filled and rolled"},
            watch=row(WorkOrder, "order"),
        )
    ],
    # The director's dashboard and the staff exports.
    "dashboard:home": [Case(DASHBOARD_PAGE)],
    "dashboard:grid": [Case(DASHBOARD_PAGE, query="bbox=-71.2,42.2,-70.9,42.5&zoom=12")],
    "dashboard:cell": [Case(DASHBOARD_PAGE, query="zoom=12&gy=0&gx=0")],
    "dashboard:export_csv": [
        Case(EXPORT, check=REQUESTS_BY_SCOPE),
        Case(
            EXPORT_IN_BACKGROUND,
            query="background=1",
            label="background",
            watch=lambda w: ExportJob.objects.count(),
        ),
    ],
    "dashboard:export_geojson": [Case(EXPORT, check=REQUESTS_BY_SCOPE)],
    "dashboard:export_job": [Case(EXPORT_JOB, kwargs=pk_of("export_job"))],
    "dashboard:export_download": [Case(EXPORT_JOB, kwargs=pk_of("export_job"))],
    "dashboard:audit_package": [
        Case(STREETS_RECORD, kwargs=tracking("hidden"), label="staff version"),
        Case(
            STREETS_RECORD,
            kwargs=tracking("hidden"),
            query="version=public",
            label="public version",
            check=zip_without_personal_data,
        ),
    ],
    "transparency:page": [Case(PUBLIC, check=no_personal_data)],
    "transparency:csv": [Case(PUBLIC, check=no_personal_data)],
    # Open311.
    "open311:discovery": [
        Case(PUBLIC, kwargs=lambda w, f=fmt: {"format": f}, label=fmt) for fmt in ("json", "xml")
    ],
    "open311:openapi": [Case(PUBLIC)],
    "open311:services": [Case(PUBLIC, kwargs=lambda w: {"format": "json"})],
    "open311:service_definition": [
        Case(PUBLIC, kwargs=lambda w: {"service_code": "pothole", "format": "xml"})
    ],
    "open311:requests": [
        Case(
            API_SUBMIT,
            kwargs=lambda w: {"format": "json"},
            query="extensions=true",
            label="no api_key",
            post_data=open311_submission,
            watch=lambda w: ServiceRequest.objects.count(),
            check=no_personal_data,
        ),
        Case(
            API_SUBMIT,
            kwargs=lambda w: {"format": "xml"},
            query="extensions=true",
            label="garbage api_key",
            post_data=lambda w: open311_submission(w) | {"api_key": w.api_key + "x"},
            watch=lambda w: ServiceRequest.objects.count(),
            check=no_personal_data,
        ),
    ],
    "open311:request": [
        Case(
            PUBLIC,
            kwargs=lambda w: {"service_request_id": w.public.tracking_number, "format": "json"},
            query="extensions=true",
            check=no_personal_data,
        ),
        Case(
            NOT_PUBLIC,
            kwargs=lambda w: {"service_request_id": w.hidden.tracking_number, "format": "json"},
            label="hidden",
        ),
    ],
    "open311:token": [
        Case(PUBLIC, kwargs=lambda w: {"token": request_token(w.public), "format": "json"}),
        Case(
            NOT_PUBLIC,
            kwargs=lambda w: {"token": request_token(w.hidden), "format": "json"},
            label="hidden",
        ),
    ],
    "open311:updates": [
        Case(
            PUBLIC,
            kwargs=lambda w: {"format": "json"},
            query="start_date=2000-01-01T00:00:00Z",
            check=no_personal_data,
        )
    ],
    r"open311/(?P<path>[\s\S]*)$": [
        Case(API_NOT_FOUND, path=lambda w: "/open311/v2/nothing-here.json")
    ],
    # Links in emails.
    "notifications:unsubscribe": token_cases("unsubscribe_token", watch=row(Follower, "follower")),
    "resident:my_requests": [
        Case(
            RESIDENT_PAGE,
            check=shows_only_to(
                lambda w: {w.public.tracking_number: {RESIDENT}, w.resident_email: {RESIDENT}}
            ),
        )
    ],
    "resident:sign_in": token_cases("signin_token", watch=row(ResidentSignInLink, "signin_link")),
    "resident:sign_out": [Case(POST_ONLY_PUBLIC)],
    "surveys:answer": token_cases(
        "survey_token",
        watch=row(Survey, "survey"),
        post_data=lambda w: {"rating": "1", "fixed": "no", "comment": "Nothing was done"},
    ),
    "requests_app:withdraw": token_cases("withdraw_token", watch=row(ServiceRequest, "public")),
    # The address search.
    "routing:address_search": [Case(PUBLIC, query="q=Main", check=no_personal_data)],
    "routing:address_reverse": [
        Case(PUBLIC, query=f"lat={CITY_CENTER[0]}&lng={CITY_CENTER[1]}", check=no_personal_data)
    ],
    # The resident portal.
    "requests_app:home": [Case(PUBLIC, check=no_personal_data)],
    "requests_app:report": [Case(PUBLIC, check=no_personal_data)],
    "requests_app:nearby": [
        Case(
            PUBLIC,
            query=lambda w: f"category={w.pothole.pk}&lat={CITY_CENTER[0]}&lng={CITY_CENTER[1]}",
            check=no_personal_data,
        )
    ],
    "requests_app:confirmation": [
        Case(PUBLIC, kwargs=tracking("public"), check=no_personal_data),
        Case(NOT_PUBLIC, kwargs=tracking("hidden"), label="hidden"),
    ],
    "requests_app:lookup": [
        Case(PUBLIC, check=no_personal_data),
        Case(NOT_PUBLIC, query=lambda w: f"number={w.hidden.tracking_number}", label="hidden"),
    ],
    "requests_app:status": [
        Case(PUBLIC, kwargs=tracking("public"), check=no_personal_data),
        Case(NOT_PUBLIC, kwargs=tracking("hidden"), label="hidden"),
    ],
    "requests_app:photo": [
        Case(PUBLIC, kwargs=lambda w: {"photo_id": w.public_photo.pk, "size": "full"}),
        Case(
            PHOTO_HELD,
            kwargs=lambda w: {"photo_id": w.held_photo.pk, "size": "thumb"},
            label="held back",
        ),
        Case(
            PHOTO_OF_WORK,
            kwargs=lambda w: {"photo_id": w.order_photo.pk, "size": "full"},
            label="work order",
        ),
    ],
    **{
        name: [
            Case(
                WEBHOOK,
                post_data=lambda w: {"From": "x@example.org", "Subject": "Forged", "To": "311"},
                watch=lambda w: (InboundEmail.objects.count(), Notification.objects.count()),
            )
        ]
        for name in ANYMAIL_WEBHOOKS
    },
}

# --- Admin models -----------------------------------------------------------------------------


@dataclass(frozen=True)
class AdminSpec:
    """Who may view, add, change and delete a registered model in the admin, and the objects
    whose pages are visited: (label, world → object, who finds it in the admin's queryset)."""

    objects: tuple
    view: frozenset = SUPERUSER
    add: frozenset = SUPERUSER
    change: frozenset = SUPERUSER
    delete: frozenset = SUPERUSER
    # What add and change POSTs send, chosen to take effect when allowed.
    add_data: Callable = lambda w: {}
    change_data: Callable = lambda w, obj: {}


def superuser_only(obj, **rights):
    """Django's model permissions, which CivicDesk gives nobody: the administrator's alone."""
    return AdminSpec(objects=(("", obj, STAFF),), **rights)


def no_inline_forms(*prefixes):
    return {
        f"{prefix}-{name}": 0 for prefix in prefixes for name in ("TOTAL_FORMS", "INITIAL_FORMS")
    }


def request_change_data(w, service_request):
    return {
        "priority": service_request.priority,
        "is_public": "on" if service_request.is_public else "",
        "new_status": Status.IN_PROGRESS,
        "status_note": "On our way",
        "comment": "Looked at it",
        "loaded_at": service_request.updated_at.isoformat(),
        **no_inline_forms("history", "comments", "photos", "duplicates"),
    }


def request_add_data(w):
    return {
        "channel": "phone",
        "category": w.pothole.pk,
        "description": "Called in: pothole by the bus stop",
        "address": "1 Main St",
        "lat": CITY_CENTER[0],
        "lng": CITY_CENTER[1],
        "language": "en",
    }


def work_order_change_data(w, order):
    return {
        "crew": order.crew_id,
        "priority": order.priority,
        "scheduled_for": "2030-01-01",
        "cost": "999",
        **no_inline_forms("requests", "photos"),
    }


ADMIN_MODELS = {
    "auth.group": superuser_only(lambda w: w.group),
    "auth.user": superuser_only(lambda w: w.users[USER]),
    "axes.accessattempt": superuser_only(lambda w: w.access_attempt, add=NOBODY),
    "axes.accesslog": superuser_only(lambda w: w.access_log, add=NOBODY),
    "axes.accessfailurelog": superuser_only(lambda w: w.access_failure, add=NOBODY),
    "otp_totp.totpdevice": superuser_only(lambda w: w.totp_device),
    "notifications.notification": AdminSpec(
        objects=(("", lambda w: w.failed_email, STAFF),),
        view=OUTBOX_READERS,
        change=OUTBOX_SENDERS,
        add=NOBODY,
        delete=NOBODY,
    ),
    "notifications.suppressedaddress": superuser_only(lambda w: w.suppressed),
    "notifications.inboundemail": superuser_only(lambda w: w.inbound, add=NOBODY),
    "notifications.digestrun": superuser_only(lambda w: w.digest, add=NOBODY),
    "notifications.servicenotice": superuser_only(lambda w: w.notice),
    "requests_app.apiclient": superuser_only(
        lambda w: w.api_client,
        delete=NOBODY,
        add_data=lambda w: {"name": "Another app", "requests_per_minute": 60},
    ),
    "requests_app.comment": AdminSpec(
        objects=(("", lambda w: w.internal_note, SEE_STREETS),),
        view=STAFF,
        change=EDITORS,
        add=NOBODY,
        delete=NOBODY,
    ),
    "requests_app.crew": superuser_only(lambda w: w.streets_crew),
    "requests_app.department": superuser_only(lambda w: w.streets),
    "requests_app.servicecategory": superuser_only(lambda w: w.pothole),
    "requests_app.serviceattribute": superuser_only(lambda w: w.attribute),
    "requests_app.servicerequest": AdminSpec(
        objects=(
            ("hidden Streets request", lambda w: w.hidden, SEE_STREETS),
            ("Parks request", lambda w: w.park_request, SEE_PARKS),
        ),
        view=STAFF,
        add=EDITORS,
        change=EDITORS,
        delete=NOBODY,
        add_data=request_add_data,
        change_data=request_change_data,
    ),
    "requests_app.slapolicy": superuser_only(lambda w: w.sla_policy),
    "requests_app.staffprofile": superuser_only(lambda w: w.users["crew"].staff_profile),
    "requests_app.workingcalendar": superuser_only(lambda w: w.calendar),
    "requests_app.workorder": AdminSpec(
        objects=(
            ("", lambda w: w.order, STREETS_ORDER),
            ("other crew", lambda w: w.other_order, SEE_STREETS),
        ),
        view=STAFF,
        change=EDITORS,
        add=NOBODY,
        delete=NOBODY,
        change_data=work_order_change_data,
    ),
    "routing.district": superuser_only(lambda w: w.district),
    "routing.routingrule": superuser_only(lambda w: w.rule),
    "routing.routingrulechange": superuser_only(
        lambda w: w.rule_change, add=NOBODY, change=NOBODY, delete=NOBODY
    ),
    "surveys.reviewtask": superuser_only(lambda w: w.review, add=NOBODY, delete=NOBODY),
    "surveys.survey": superuser_only(lambda w: w.survey, add=NOBODY, delete=NOBODY),
}

# The pages Django's admin gives each registered model; "redirect" is the unnamed
# <object_id>/ that forwards to the change page.
ADMIN_PAGE_KINDS = ("changelist", "add", "change", "history", "delete", "redirect")


def admin_model_keys(model):
    app, name = model._meta.app_label, model._meta.model_name
    keys = {kind: f"admin:{app}_{name}_{kind}" for kind in ADMIN_PAGE_KINDS[:-1]}
    keys["redirect"] = f"admin/{app}/{name}/<path:object_id>/"
    return keys


def admin_cases(model, model_admin, spec, kind):
    """The cases of one admin page of `model`, an object of each scope for object pages."""
    seers = spec.view | spec.change
    app, name = model._meta.app_label, model._meta.model_name
    not_staff = dict.fromkeys(NON_STAFF, LOGIN)
    if kind == "add":
        return [
            Case(
                Access(
                    f"admin add {name}",
                    staff_only(lambda r: 200 if r in spec.add else 403),
                    post=not_staff | dict.fromkeys(STAFF - spec.add, 403),
                ),
                post_data=spec.add_data,
                watch=lambda w: model._default_manager.count(),
            )
        ]
    cases = []
    for label, obj, scope in spec.objects:

        def same_row(w, obj=obj):
            found = model._default_manager.filter(pk=obj(w).pk)
            return model._default_manager.count(), found.values().first()

        if kind == "changelist":
            # The list, and a POST of each of its actions with the object selected.
            refused = STAFF - (spec.change & scope)
            access = Access(
                f"admin list of {name}, with its actions",
                staff_only(lambda r: 200 if r in seers else 403),
                post=not_staff | {r: 403 if r not in seers else ANY_REFUSAL for r in refused},
            )
            change_url = reverse(f"admin:{app}_{name}_change", args=["0"])[:-9]
            actions = ["delete_selected"] + [
                a if isinstance(a, str) else a.__name__ for a in model_admin.actions or []
            ]
            for n, action in enumerate(actions):
                cases.append(
                    Case(
                        access,
                        label=f"{label} {action}".strip(),
                        post_data=lambda w, obj=obj, action=action: {
                            "action": action,
                            "_selected_action": [str(obj(w).pk)],
                            "index": "0",
                            "apply": "1",  # the crew form of "assign to a crew…"
                            "crew": str(w.parks_crew.pk),
                            "post": "yes",  # the confirmation of "delete selected"
                        },
                        watch=same_row,
                        check=shows_only_to(
                            lambda w, obj=obj, scope=scope, url=change_url: {
                                f"{url}{quote(obj(w).pk)}/change/": scope
                            }
                        ),
                        post_only=n > 0,
                    )
                )
            continue

        if kind == "change":
            get = staff_only(
                lambda r, scope=scope: 403 if r not in seers else 200 if r in scope else ADMIN_INDEX
            )
            refused = STAFF - (spec.change & scope)
            post = {r: 403 if r not in spec.change else ADMIN_INDEX for r in refused}
            data = lambda w, obj=obj: spec.change_data(w, obj(w))  # noqa: E731
        elif kind == "history":
            # Django looks the object up before it asks about permission here.
            get = staff_only(
                lambda r, scope=scope: ADMIN_INDEX if r not in scope else 200 if r in seers else 403
            )
            post, data = None, None
        elif kind == "delete":
            get = staff_only(
                lambda r, scope=scope: (
                    403 if r not in spec.delete else 200 if r in scope else ADMIN_INDEX
                )
            )
            refused = STAFF - (spec.delete & scope)
            post = {r: 403 if r not in spec.delete else ADMIN_INDEX for r in refused}
            data = lambda w: {"post": "yes"}  # noqa: E731
        else:
            get, post, data = staff_only(lambda r: REDIRECT), None, None
        cases.append(
            Case(
                Access(
                    f"admin {kind} of {name}",
                    get,
                    post=not_staff | post if post is not None else {},
                ),
                kwargs=lambda w, obj=obj: {"object_id": quote(obj(w).pk)},
                label=label,
                path=(
                    (lambda w, obj=obj: f"/admin/{app}/{name}/{quote(obj(w).pk)}/")
                    if kind == "redirect"
                    else None
                ),
                post_data=data or (lambda w: {}),
                watch=same_row,
            )
        )
    return cases


# --- Walking the resolver ---------------------------------------------------------------------


def _join(route, more):
    # As Django joins routes for ResolverMatch.route.
    return route + (more[1:] if more.startswith("^") else more)


def url_patterns():
    """{key: route} of every URL pattern; the key is its namespaced name, or its route."""

    def walk(resolver, route, namespaces):
        for pattern in resolver.url_patterns:
            full = _join(route, str(pattern.pattern))
            if isinstance(pattern, URLResolver):
                extra = [pattern.namespace] if pattern.namespace else []
                yield from walk(pattern, full, namespaces + extra)
            else:
                yield (":".join([*namespaces, pattern.name]) if pattern.name else full), full

    found = {}
    for key, route in walk(get_resolver(), "", []):
        assert key not in found, f"two URL patterns answer to {key}"
        found[key] = route
    return found


PATTERNS = url_patterns()
# {key: (model, model_admin, kind)} for the pages of every registered model.
ADMIN_PAGES = {
    key: (model, model_admin, kind)
    for model, model_admin in admin.site._registry.items()
    for kind, key in admin_model_keys(model).items()
}


def cases_for(key):
    if key in URLS:
        return URLS[key]
    model, model_admin, kind = ADMIN_PAGES[key]
    return admin_cases(model, model_admin, ADMIN_MODELS[model._meta.label_lower], kind)


def case_url(key, case, w):
    if case.path is not None:
        path = case.path(w)
    else:
        path = reverse(key, kwargs={k: str(v) for k, v in case.kwargs(w).items()})
    # Filled in right: the URL leads back to the very pattern it was made for.
    assert resolve(path).route == PATTERNS[key], f"{path} does not resolve to {key}"
    query = case.query(w) if callable(case.query) else case.query
    return f"{path}?{query}" if query else path


# --- Checking ---------------------------------------------------------------------------------


def writes():
    """Rows this connection has inserted, updated or deleted so far (sessions aside)."""
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0) "
                "FROM pg_stat_xact_user_tables WHERE relname <> 'django_session'"
            )
        else:
            cursor.execute("SELECT total_changes()")
        return cursor.fetchone()[0]


def check_get(w, case, url, role):
    written = writes()
    response = client_for(w, role).get(url)
    expected, got = case.access.get[role], outcome(response)
    where = f"GET {url} [{case.access.name}] as {role}"
    if not matches(got, expected):
        return f"{where}: {got}, expected {expected}"
    if got in REFUSALS and writes() != written:
        return f"{where}: refused ({got}), yet {writes() - written} rows written"
    if case.check and got == 200:
        problem = case.check(role, response, w)
        if problem:
            return f"{where}: {problem}"
    return None


def check_refused_post(w, case, url, role):
    expected = case.access.post[role]
    data = case.post_data(w)
    before, written = case.watch(w), writes()
    got = outcome(client_for(w, role).post(url, data))
    changed, after = writes() - written, case.watch(w)
    where = f"POST {url} [{case.access.name}] as {role}"
    if not matches(got, expected):
        return f"{where}: {got}, expected {expected}"
    if changed or before != after:
        return f"{where}: refused ({got}), yet {changed} rows written: {before} → {after}"
    return None


def run_checks(w, key, only=None):
    """The GET of every role and the POST of every refused role, on every case of `key`
    (or the one check `only` names); (problems, number of checks)."""
    problems, checked = [], 0
    for case in cases_for(key):
        url = case_url(key, case, w)
        for role in ROLES:
            for method, check, wanted in (
                ("GET", check_get, not case.post_only),
                ("POST", check_refused_post, role in case.access.post),
            ):
                this = (key, case.label, role, method)
                if not wanted or (this != only if only else this in KNOWN_BUGS):
                    continue
                problems.append(check(w, case, url, role))
                checked += 1
    return [p for p in problems if p], checked


# --- Tests ------------------------------------------------------------------------------------

# Found by this file and left for the app's owners; each runs on its own, xfail(strict), so
# that fixing it makes this list shrink. (pattern key, case label, role, method): why.
KNOWN_BUGS = {}


def test_every_url_pattern_is_classified():
    registered = {model._meta.label_lower for model in admin.site._registry}
    assert registered - set(ADMIN_MODELS) == set(), "ModelAdmins missing from ADMIN_MODELS"
    assert set(ADMIN_MODELS) - registered == set(), "ADMIN_MODELS no longer registered"
    classified = set(URLS) | set(ADMIN_PAGES)
    assert set(PATTERNS) - classified == set(), "URL patterns without an access class"
    assert classified - set(PATTERNS) == set(), "classified, but no such URL pattern"
    assert not set(URLS) & set(ADMIN_PAGES)
    for key in KNOWN_BUGS:
        assert any(case.label == key[1] for case in cases_for(key[0])), key


def test_the_write_counter_sees_writes(w):
    written = writes()
    Group.objects.create(name="Night shift")
    assert writes() > written


@pytest.mark.parametrize("key", sorted(PATTERNS))
def test_url_answers_every_role_as_the_role_matrix_says(w, key):
    if key not in URLS and key not in ADMIN_PAGES:
        pytest.fail(f"{key} ({PATTERNS[key]}) has no access class: add it to URLS")
    problems, checked = run_checks(w, key)
    assert checked
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "bug",
    [
        pytest.param(bug, marks=pytest.mark.xfail(strict=True, reason=why), id="-".join(bug))
        for bug, why in KNOWN_BUGS.items()
    ],
)
def test_known_access_control_bug(w, bug):
    problems, checked = run_checks(w, bug[0], only=bug)
    assert checked == 1
    assert not problems, "\n".join(problems)


# The refused POSTs change nothing; the same payloads from a role with the right do, so
# "nothing changed" there means refused, not a payload that never works.


def start_the_work_and_take_the_after_photo(w):
    WorkOrder.objects.get(pk=w.order.pk).start(by=w.users["crew"])
    Photo.objects.create(
        work_order=w.order, kind=Photo.Kind.AFTER, image=jpeg("a.jpg"), thumbnail=jpeg("b.jpg")
    )
    return {}


ALLOWED_POSTS = {
    # (pattern key, case label, role): world → what to do first and what to add to the POST
    ("admin:requests_app_servicerequest_change", "hidden Streets request", "streets"): None,
    ("admin:requests_app_servicerequest_change", "Parks request", "parks"): None,
    ("admin:requests_app_servicerequest_add", "", "parks"): None,
    ("admin:requests_app_workorder_change", "", "streets"): None,
    ("admin:requests_app_apiclient_add", "", "admin"): None,
    ("admin:notifications_notification_changelist", "resend", "dispatcher"): None,
    ("admin:routing_district_delete", "", "admin"): None,
    ("admin:auth_user_password_change", "", "admin"): None,
    ("crew:start", "", "crew"): None,
    ("crew:photo", "", "crew"): None,
    ("crew:complete", "", "crew"): start_the_work_and_take_the_after_photo,
    ("open311:requests", "no api_key", ANONYMOUS): lambda w: {"api_key": w.api_key},
    ("notifications:unsubscribe", "", ANONYMOUS): None,
    ("resident:sign_in", "", ANONYMOUS): None,
    ("surveys:answer", "", ANONYMOUS): None,
    ("requests_app:withdraw", "", ANONYMOUS): None,
}


@pytest.mark.parametrize("allowed", list(ALLOWED_POSTS), ids="-".join)
def test_the_same_post_works_for_a_role_with_the_right(w, allowed):
    key, label, role = allowed
    case = next(case for case in cases_for(key) if case.label == label)
    # Allowed by the role, or by what the POST adds (an API key is no role).
    assert role not in case.access.post or ALLOWED_POSTS[allowed]
    url = case_url(key, case, w)
    before = case.watch(w)
    extra = ALLOWED_POSTS[allowed](w) if ALLOWED_POSTS[allowed] else {}
    response = client_for(w, role).post(url, case.post_data(w) | extra)
    assert outcome(response) in (200, REDIRECT), body(response)[:2000]
    assert case.watch(w) != before
