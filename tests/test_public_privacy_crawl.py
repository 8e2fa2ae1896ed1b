"""No personal data on any public surface.

A realistic city (the demo seed, plus requests whose reporters left names, emails and
phones — some of them typed into the description too —, followers, internal notes and a
crew's note) is crawled as an anonymous visitor: every page reached by links from the home
and transparency pages, every public status page and confirmation page, the report form's
nearby list (JSON and the server's second step), the address search, Open311 (discovery,
services, requests with and without extensions, single requests, updates; JSON and XML),
the transparency CSV and the pages behind emailed links. None of them may contain a
reporter's or follower's name, email or phone, or the text of an internal note.

test_dashboard.py and test_exports.py check the transparency page and the exports on their
own; test_open311.py checks the Open311 fields one by one. This is the sweep over all of it.
"""

import re
from collections import deque
from html.parser import HTMLParser
from urllib.parse import urldefrag, urlencode, urlsplit

import pytest
from django.core.management import call_command
from django.utils import timezone

from notifications.links import unsubscribe_token
from requests_app.links import withdraw_token
from requests_app.models import (
    Comment,
    Crew,
    Follower,
    HistoryEntry,
    ServiceCategory,
    ServiceRequest,
    StaffRole,
    WorkOrder,
)
from requests_app.services import Intake, request_process_intake, request_submit
from surveys.links import survey_token
from surveys.models import Survey

from .factories import CITY_CENTER, staff_user

pytestmark = pytest.mark.django_db

REPORTERS = [
    # name, email, phone, what they typed
    (
        "Zebulon Quarrington",
        "zeb.quarrington@private.example",
        "617-555-0177",
        "Pothole outside my house, call me on 617-555-0177 if you need access",
    ),
    (
        "Philippa Ostrowska-Lind",
        "pip.lind@private.example",
        "(617) 555-0142",
        "Streetlight flickering; write to pip.lind@private.example for the gate",
    ),
    (
        "Casimir Vantongeren",
        "casimir.v@private.example",
        "+1 617 555 0163",
        "Fallen branch across the path",
    ),
]
INTERNAL_NOTES = [
    "Internal: the reporter is the landlord of no. 14, handle carefully",
    "Internal: duplicate of an insurance claim, do not discuss",
]
CREW_NOTE = "Crew note: gate code 4471, dog in the yard"
FOLLOWER = "quiet.neighbour@private.example"
# Pages for staff: an anonymous visitor is sent to the login form, not crawled inside.
PRIVATE = ("/admin/", "/crew/", "/dashboard/", "/i18n/", "/anymail/")


@pytest.fixture
def city(settings):
    settings.TRANSPARENCY_MIN_CELL = 1
    call_command("seed_demo", requests=40, verbosity=0)
    dispatcher = staff_user("dana", StaffRole.DISPATCHER)
    categories = list(ServiceCategory.objects.filter(code__in=["pothole", "streetlight"]))
    filed = []
    for n, (name, email, phone, text) in enumerate(REPORTERS):
        request = request_submit(
            Intake(
                category=categories[n % len(categories)],
                description=text,
                lat=CITY_CENTER[0] + 0.0002 * n,
                lng=CITY_CENTER[1],
                address=f"{14 + n} Harbor Street",
                reporter_name=name,
                reporter_email=email,
                reporter_phone=phone,
            )
        )
        request_process_intake(request.pk)
        request.refresh_from_db()
        filed.append(request)
    first, second, third = filed
    for note in INTERNAL_NOTES:
        first.add_comment(note, by=dispatcher, public=False)
    first.add_comment("Crew on site tomorrow morning.", by=dispatcher, public=True)
    Follower.objects.create(request=first, email=FOLLOWER, source=Follower.Source.FOLLOW)
    crew = Crew.objects.filter(department=first.department).first()
    order = WorkOrder.create_for([first, second], crew=crew, by=dispatcher)
    order.hold(by=dispatcher, note=CREW_NOTE)
    survey = Survey.objects.create(
        request=second,
        recipient=REPORTERS[1][1],
        rating=4,
        is_fixed=True,
        comment="Quick work, thanks",
        answered_at=timezone.now(),
    )
    third.set_public(False, by=dispatcher, reason="On private land")
    return {
        "filed": filed,
        "links": [
            f"/surveys/{survey_token(survey.pk)}/",
            f"/notifications/unsubscribe/{unsubscribe_token(first.pk, FOLLOWER)}/",
            f"/requests/withdraw/{withdraw_token(first.pk)}/",
        ],
    }


def secrets():
    """Every reporter's and follower's contact details and every internal note, as stored."""
    values = set()
    for r in ServiceRequest.objects.all():
        values |= {r.reporter_name, r.reporter_email, r.reporter_phone}
        values |= {r.reporter_device_id, r.reporter_account_id}
    values |= set(Follower.objects.values_list("email", flat=True))
    values |= set(Comment.objects.filter(is_public=False).values_list("text", flat=True))
    values |= set(
        HistoryEntry.objects.filter(is_public=False, action=HistoryEntry.Action.NOTE).values_list(
            "note", flat=True
        )
    )
    values.add(CREW_NOTE)
    values = {v for v in values if v and len(v) >= 6}
    # Phones also without their punctuation, as a serializer might normalise them.
    digits = {re.sub(r"\D", "", v) for v in values if re.fullmatch(r"[\d\s()+.-]{7,}", v)}
    return sorted(values | {d for d in digits if len(d) >= 10})


class Links(HTMLParser):
    def __init__(self, html):
        super().__init__()
        self.hrefs = []
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        if tag == "a":
            self.hrefs.append(dict(attrs).get("href") or "")


def public_urls(city):
    """What is public without following a link to it."""
    public = ServiceRequest.objects.public()
    categories = ServiceCategory.objects.active()
    urls = []
    for r in ServiceRequest.objects.all():
        urls += [r.get_absolute_url(), f"/report/done/{r.tracking_number}/"]
        urls += [f"/track/?number={r.tracking_number}"]
    for r in public.exclude(lat=None)[:25]:
        query = urlencode({"category": r.category_id, "lat": r.lat, "lng": r.lng})
        urls += [f"/report/nearby/?{query}", f"/addresses/reverse/?lat={r.lat}&lng={r.lng}"]
    for q in ["Harbor", "14 Harbor Street", "Main", "Elm", "Zebulon", "private.example"]:
        urls.append(f"/addresses/search/?{urlencode({'q': q})}")
    urls += ["/transparency/data.csv?days=365", "/transparency/?days=365"]
    for fmt in ("json", "xml"):
        urls += [f"/open311/discovery.{fmt}", f"/open311/v2/services.{fmt}"]
        urls += [f"/open311/v2/services/{c.code}.{fmt}" for c in categories]
        for query in ("", "?extensions=true", "?status=closed&extensions=true", "?page=2"):
            urls.append(f"/open311/v2/requests.{fmt}{query}")
        for r in ServiceRequest.objects.all():
            urls.append(f"/open311/v2/requests/{r.tracking_number}.{fmt}?extensions=true")
        urls.append(f"/open311/v2/servicerequestupdates.{fmt}?start_date=2000-01-01T00:00:00Z")
    urls += ["/open311/v2/openapi.json", *city["links"]]
    return urls


def test_no_personal_data_or_internal_notes_on_any_public_page(client, city):
    hidden = secrets()
    assert "Zebulon Quarrington" in hidden and "617-555-0177" in hidden
    assert CREW_NOTE in hidden and FOLLOWER in hidden and INTERNAL_NOTES[0] in hidden

    def leaks(url, response):
        body = b"".join(response.streaming_content) if response.streaming else response.content
        text = body.decode("utf-8", "replace")
        lowered = text.lower()
        return [(url, secret) for secret in hidden if secret.lower() in lowered], text

    seen, found, kinds = set(), [], set()
    queue = deque(["/", "/transparency/", *public_urls(city)])
    while queue:
        url = urldefrag(queue.popleft())[0]
        if url in seen or url.startswith(PRIVATE) or url.startswith("/static/"):
            continue
        seen.add(url)
        response = client.get(url)
        assert response.status_code < 500, url
        if response.status_code in (301, 302):
            queue.append(response["Location"])
            continue
        problems, text = leaks(url, response)
        found += problems
        kind = response.get("Content-Type", "").split(";")[0]
        kinds.add(kind)
        if kind == "text/html":
            for href in Links(text).hrefs:
                parts = urlsplit(href)
                if not parts.netloc and parts.path.startswith("/"):
                    queue.append(href)

    # The report form's second step (without JavaScript) lists the requests nearby.
    first = city["filed"][0]
    step = client.post(
        "/report/",
        {
            "category": first.category_id,
            "description": "Another one",
            "lat": first.lat,
            "lng": first.lng,
        },
    )
    assert step.status_code == 200 and first.tracking_number in step.content.decode()
    found += leaks("POST /report/ (second step)", step)[0]

    assert not found, "\n".join(f"{url}: {secret!r}" for url, secret in found)
    assert len(seen) > 200, len(seen)
    assert {"text/html", "application/json", "text/csv"} <= kinds, kinds
    assert any("xml" in kind for kind in kinds), kinds
