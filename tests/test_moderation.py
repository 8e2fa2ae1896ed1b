"""What the public sees of residents' words and photos, and staff's say in it.

Contact details are masked on every public surface while staff see the original; a word
list holds descriptions and residents' comments back for review; staff hide, show, approve
and reword in the admin, each with a reason in the append-only history; residents' photos
can wait for approval; and a reporter can withdraw a report from public view with the
signed link in their confirmation email.
"""

import csv
import io
import json
import re
import time
import xml.etree.ElementTree as ET
import zipfile
from urllib.parse import urlparse

import pytest
from django.core import signing
from django.core.exceptions import ValidationError
from django.urls import include, path, reverse

import civicdesk.urls
from notifications.models import Notification
from notifications.services import Recipient, notification_send, render_email
from requests_app import urls as portal_urls
from requests_app import withdraw_views
from requests_app.access import visible_requests
from requests_app.links import withdraw_token
from requests_app.models import (
    Comment,
    HistoryEntry,
    Photo,
    ServiceRequest,
    StaffRole,
    Status,
)
from requests_app.moderation import blocked_words, mask_contact_details
from requests_app.photos import process_photo
from requests_app.services import Intake, photo_attach, request_submit

from .factories import CITY_CENTER, ServiceRequestFactory, staff_user


def _portal_patterns():
    # requests_app/urls.py is mounted by its owner; until it has the withdraw view, the
    # tests add it where it will be.
    patterns = list(portal_urls.urlpatterns)
    if not any(getattr(p, "name", None) == "withdraw" for p in patterns):
        patterns.append(
            path("requests/withdraw/<str:token>/", withdraw_views.withdraw, name="withdraw")
        )
    return patterns


urlpatterns = [p for p in civicdesk.urls.urlpatterns if str(p.pattern)] + [
    path("", include((_portal_patterns(), "requests_app")))
]

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]

PHONE = "(555) 123-4567"
EMAIL = "jo.resident@example.org"
LOUD = f"Deep pothole by the school. Call me on {PHONE} or write to {EMAIL} any time."
MASKED = (
    "Deep pothole by the school. Call me on [phone number hidden] or write to "
    "[email address hidden] any time."
)
COMMENT_PHONE = "+1 617 555 0142"
REWORDED = "Deep pothole by the school (wording by the city)."


@pytest.fixture
def loud(pothole, dispatcher):
    """A public request whose description and resident's reply carry contact details, and a
    public status note that does too."""
    service_request = ServiceRequestFactory(
        category=pothole, department=pothole.department, description=LOUD
    )
    service_request.add_comment(
        f"It is getting worse, ring {COMMENT_PHONE}", public=True, author_label="Resident"
    )
    service_request.change_status(
        Status.ASSIGNED, by=dispatcher, note=f"Crew told; questions to {EMAIL}"
    )
    return service_request


def _originals():
    return [PHONE, EMAIL, COMMENT_PHONE, "555-0142", "123-4567"]


def _assert_masked(text, where):
    for original in _originals():
        assert original not in text, f"{original!r} shown on {where}"
    assert "[phone number hidden]" in text, where
    assert "[email address hidden]" in text, where


# --- Masking ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "(555) 123-4567",
        "555.123.4567",
        "555-123-4567",
        "555 123 4567",
        "+1 555 123 4567",
        "+1 (617) 555-0142",
        "1-800-555-0199",
        "5551234567",
        "(617)555-0142",
        "+44 20 7946 0958",
        "+33 1 23 45 67 89",
        "+49 30 12345678",
        "020 7946 0958",
        "07700 900123",
        "555-1234",
    ],
)
def test_phone_numbers_in_common_formats_are_masked(text):
    assert mask_contact_details(f"Call {text}, thanks.") == "Call [phone number hidden], thanks."


@pytest.mark.parametrize(
    "text",
    ["jo@example.org", "JO.RESIDENT@EXAMPLE.ORG", "a.b+311@sub.example.co.uk", "n_o-1@x-y.io"],
)
def test_email_addresses_are_masked(text):
    assert mask_contact_details(f"Mail {text}.") == "Mail [email address hidden]."


@pytest.mark.parametrize(
    "text",
    [
        "See CD-1234-5678 and CD-AB12-34CD",
        "Since 2024-01-15 10:30, or 01/15/2024, or 15.01.2024",
        "Outside 1234 Main Street, apt 4",
        "Worse every year: 2019 2020 2021 2023",
        "ZIP 02139-4307",
        "Between 10:30-11:45",
        "At 42.3601234567, -71.0589123",
        "It cost $1,250.00 last time, 2,500,000 in total",
        "The 100-1200 block",
        "Pole 2345678, work order WO-123-4567",
        "3 ft by 2 ft, 6 in deep, no. 48",
        "Tell @cityhall",
        "",
    ],
)
def test_dates_tracking_numbers_addresses_and_years_are_left_alone(text):
    assert mask_contact_details(text) == text


def test_masking_keeps_the_rest_of_the_text():
    assert mask_contact_details(LOUD) == MASKED


# --- Every public surface masks, staff see the original --------------------------------------


def test_status_page_masks_description_comment_and_status_note(client, loud):
    html = client.get(loud.get_absolute_url()).content.decode()
    _assert_masked(html, "the status page")
    assert "Deep pothole by the school. Call me on [phone number hidden]" in html
    assert "It is getting worse, ring [phone number hidden]" in html
    assert "Crew told; questions to [email address hidden]" in html
    loud.refresh_from_db()
    assert loud.description == LOUD  # the original is never changed


def test_admin_shows_staff_the_original_and_what_the_public_sees(client, dispatcher, loud):
    client.force_login(dispatcher)
    url = reverse("admin:requests_app_servicerequest_change", args=[loud.pk])
    html = client.get(url).content.decode()
    assert PHONE in html and EMAIL in html and COMMENT_PHONE in html
    assert MASKED in html
    assert "Contact details masked" in html


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_open311_requests_and_single_request_mask_descriptions_and_notes(client, loud, fmt):
    for url in (
        reverse("open311:requests", args=[fmt]) + "?extensions=true",
        reverse("open311:request", args=[loud.tracking_number, fmt]) + "?extensions=true",
    ):
        response = client.get(url)
        assert response.status_code == 200
        text = response.content.decode()
        _assert_masked(text, url)
        if fmt == "json":
            (row,) = json.loads(text)
            description, status_notes = row["description"], row["status_notes"]
        else:
            row = ET.fromstring(response.content).find("request")
            description, status_notes = row.findtext("description"), row.findtext("status_notes")
        assert description == MASKED
        # The status changed after the resident's reply, so its note explains it now.
        assert status_notes == "Crew told; questions to [email address hidden]"


@pytest.mark.parametrize("fmt", ["json", "xml"])
def test_open311_updates_mask_comments_and_status_notes(client, loud, fmt):
    response = client.get(reverse("open311:updates", args=[fmt]))
    assert response.status_code == 200
    _assert_masked(response.content.decode(), "servicerequestupdates")


def test_open311_status_notes_of_a_staff_comment_are_masked_too(client, pothole, dispatcher):
    service_request = ServiceRequestFactory(category=pothole, department=pothole.department)
    service_request.add_comment(f"Call us back on {PHONE}", by=dispatcher, public=True)
    (row,) = json.loads(client.get(reverse("open311:requests", args=["json"])).content)
    assert row["status_notes"] == "Call us back on [phone number hidden]"


def _streamed(response):
    return b"".join(response.streaming_content).decode()


def test_exports_keep_the_original_for_staff_and_give_the_public_wording(client, loud):
    client.force_login(staff_user("dan", StaffRole.DISPATCHER))
    rows = list(csv.DictReader(io.StringIO(_streamed(client.get(reverse("dashboard:export_csv"))))))
    (row,) = rows
    assert row["description"] == LOUD
    assert row["public_description"] == MASKED

    data = json.loads(_streamed(client.get(reverse("dashboard:export_geojson"))))
    (feature,) = data["features"]
    assert feature["properties"]["description"] == MASKED
    assert "public_description" not in feature["properties"]
    _assert_masked(json.dumps(data), "the GeoJSON export")


def test_background_csv_export_has_the_public_wording(client, loud):
    from requests_app.dashboard import Filters
    from requests_app.export_tasks import run_export
    from requests_app.models import ExportJob

    dispatcher = staff_user("dan", StaffRole.DISPATCHER)
    job = ExportJob.objects.create(
        requested_by=dispatcher,
        format=ExportJob.Format.GEOJSON,
        filters=Filters.default().as_dict(),
    )
    run_export(job.pk)
    job.refresh_from_db()
    text = job.file.read().decode()
    _assert_masked(text, "the background GeoJSON export")


def test_public_audit_package_masks_staff_version_keeps_original(client, loud):
    client.force_login(staff_user("dan", StaffRole.DISPATCHER))
    url = reverse("dashboard:audit_package", args=[loud.tracking_number])

    def contents(response):
        archive = zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))
        return {name: archive.read(name).decode() for name in archive.namelist()}

    public = contents(client.get(url, {"version": "public"}))
    _assert_masked("".join(public.values()), "the public audit package")
    assert json.loads(public["request.json"])["description"] == MASKED

    staff = contents(client.get(url))
    record = json.loads(staff["request.json"])
    assert record["description"] == LOUD and record["public_description"] == MASKED
    assert COMMENT_PHONE in staff["comments.json"]


def test_transparency_page_and_csv_carry_no_residents_words(client, loud):
    for name in ("transparency:page", "transparency:csv"):
        text = client.get(reverse(name)).content.decode()
        for original in [*_originals(), "Deep pothole"]:
            assert original not in text


def test_nearby_json_masks_descriptions(client, loud, pothole):
    response = client.get(
        reverse("requests_app:nearby"),
        {"category": pothole.pk, "lat": CITY_CENTER[0], "lng": CITY_CENTER[1]},
    )
    (row,) = response.json()["results"]
    assert row["description"].startswith("Deep pothole by the school. Call me on [phone")
    _assert_masked(json.dumps(response.json()), "the nearby JSON")


# --- The word list ---------------------------------------------------------------------------

ABUSIVE = "This bullshit pothole has been here for months"


@pytest.fixture
def abusive(pothole):
    return ServiceRequestFactory(
        category=pothole, department=pothole.department, description=ABUSIVE
    )


def test_word_list_holds_a_description_back_from_the_public(client, abusive):
    assert abusive.description_awaiting_review
    html = client.get(abusive.get_absolute_url()).content.decode()
    assert "This description is awaiting review." in html
    assert "bullshit" not in html
    (row,) = json.loads(client.get(reverse("open311:requests", args=["json"])).content)
    assert row["description"] == "This description is awaiting review."


def test_word_list_matches_whole_words_and_stems_only(pothole, settings):
    settings.MODERATION_BLOCKED_WORDS = ["gronk*", "blarg"]
    assert blocked_words() == ("gronk*", "blarg")
    held = [
        ServiceRequestFactory(category=pothole, description=text)
        for text in ("GRONKING awful", "what a blarg.", "blarg")
    ]
    passed = [
        ServiceRequestFactory(category=pothole, description=text)
        for text in ("blargh is no word", "agronking", "the grass is long")
    ]
    assert all(r.description_awaiting_review for r in held)
    assert not any(r.description_awaiting_review for r in passed)
    # The admin filter runs the same list in the database and agrees.
    awaiting = set(ServiceRequest.objects.awaiting_review())
    assert awaiting == set(held)


def test_no_word_list_when_configured_so(abusive, settings):
    settings.MODERATION_BLOCKED_WORDS = ["none"]
    assert blocked_words() == ()
    assert not abusive.description_awaiting_review
    assert not ServiceRequest.objects.awaiting_review().exists()


def test_staff_see_a_held_description_flagged_and_filterable(client, dispatcher, abusive):
    client.force_login(dispatcher)
    changelist = reverse("admin:requests_app_servicerequest_changelist")
    html = client.get(changelist, {"moderation": "review"}).content.decode()
    assert abusive.tracking_number in html
    page = client.get(reverse("admin:requests_app_servicerequest_change", args=[abusive.pk]))
    html = page.content.decode()
    assert ABUSIVE in html
    assert "Awaiting review: contains “bullshit”" in html
    assert "id_approve_description" in html


def _empty_inlines():
    data = {}
    for prefix in ("history", "comments", "photos", "duplicates"):
        data.update(
            {
                f"{prefix}-TOTAL_FORMS": "0",
                f"{prefix}-INITIAL_FORMS": "0",
                f"{prefix}-MIN_NUM_FORMS": "0",
                f"{prefix}-MAX_NUM_FORMS": "1000",
            }
        )
    return data


def _admin_post(client, service_request, **fields):
    url = reverse("admin:requests_app_servicerequest_change", args=[service_request.pk])
    loaded_at = client.get(url).context["adminform"].form["loaded_at"].value()
    data = {
        "priority": service_request.priority,
        "is_public": "on",
        "new_status": "",
        "status_note": "",
        "close_reason_choice": "",
        "comment": "",
        "loaded_at": loaded_at,
        **_empty_inlines(),
        **fields,
    }
    return client.post(url, {k: v for k, v in data.items() if v is not None})


def _moderation_entries(service_request):
    return list(service_request.history.filter(action=HistoryEntry.Action.MODERATION))


def test_staff_approve_a_held_description_as_written(client, dispatcher, abusive):
    client.force_login(dispatcher)
    response = _admin_post(client, abusive, approve_description="on")
    assert response.status_code == 200
    assert "all need a reason" in response.content.decode()
    abusive.refresh_from_db()
    assert not abusive.description_approved

    response = _admin_post(
        client, abusive, approve_description="on", moderation_reason="Frustration, not abuse"
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    abusive.refresh_from_db()
    assert abusive.description_approved and abusive.description == ABUSIVE
    assert abusive.public_description == ABUSIVE
    (entry,) = _moderation_entries(abusive)
    assert (entry.actor, entry.field, entry.new_value) == (
        dispatcher,
        "description_approved",
        "True",
    )
    assert entry.note == "Frustration, not abuse" and not entry.is_public
    assert ABUSIVE in client.get(abusive.get_absolute_url()).content.decode()


def test_staff_reword_a_description_and_the_original_is_kept(client, dispatcher, loud):
    client.force_login(dispatcher)
    response = _admin_post(
        client, loud, public_wording=REWORDED, moderation_reason="Took out the phone number"
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    loud.refresh_from_db()
    assert loud.description == LOUD
    assert loud.public_description_override == REWORDED
    (entry,) = _moderation_entries(loud)
    assert entry.actor == dispatcher and entry.actor_label == dispatcher.get_username()
    assert (entry.field, entry.old_value, entry.new_value) == (
        "public_description_override",
        "",
        REWORDED,
    )
    assert entry.note == "Took out the phone number"
    assert REWORDED in client.get(loud.get_absolute_url()).content.decode()
    (row,) = json.loads(client.get(reverse("open311:requests", args=["json"])).content)
    assert row["description"] == REWORDED

    # Clearing the wording shows the (masked) original again.
    _admin_post(client, loud, public_wording="", moderation_reason="Back to the original")
    loud.refresh_from_db()
    assert loud.public_description_override == "" and loud.public_description == MASKED
    assert len(_moderation_entries(loud)) == 2


def test_staff_hide_and_restore_a_request_with_a_reason(client, dispatcher, loud):
    client.force_login(dispatcher)
    response = _admin_post(client, loud, is_public=None)
    assert response.status_code == 200  # a reason is needed
    loud.refresh_from_db()
    assert loud.is_public

    response = _admin_post(client, loud, is_public=None, moderation_reason="Private matter")
    assert response.status_code == 302, response.content.decode()[:2000]
    loud.refresh_from_db()
    assert not loud.is_public
    assert client.get(loud.get_absolute_url()).status_code == 404
    assert json.loads(client.get(reverse("open311:requests", args=["json"])).content) == []
    assert loud in visible_requests(dispatcher)  # still in the queue

    client.force_login(dispatcher)
    _admin_post(client, loud, is_public="on", moderation_reason="Resident agreed")
    loud.refresh_from_db()
    assert loud.is_public
    entries = _moderation_entries(loud)
    assert [(e.field, e.old_value, e.new_value, e.note, e.actor) for e in entries] == [
        ("is_public", "True", "False", "Private matter", dispatcher),
        ("is_public", "False", "True", "Resident agreed", dispatcher),
    ]


def _photo(service_request, photo_upload, **fields):
    return Photo.objects.create(
        request=service_request, image=photo_upload(), thumbnail=photo_upload(), **fields
    )


def test_staff_hide_and_restore_a_photo_with_a_reason(client, dispatcher, loud, photo_upload):
    photo = _photo(loud, photo_upload)
    client.force_login(dispatcher)
    response = _admin_post(client, loud, hide_photos=[str(photo.pk)])
    assert response.status_code == 200
    photo.refresh_from_db()
    assert photo.is_public

    response = _admin_post(
        client, loud, hide_photos=[str(photo.pk)], moderation_reason="A face is visible"
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    photo.refresh_from_db()
    assert not photo.is_public and not photo.awaiting_approval
    client.logout()
    assert client.get(photo.get_absolute_url()).status_code == 404
    assert photo.get_thumbnail_url() not in client.get(loud.get_absolute_url()).content.decode()

    client.force_login(dispatcher)
    assert client.get(photo.get_absolute_url()).status_code == 200  # staff still see it
    _admin_post(client, loud, show_photos=[str(photo.pk)], moderation_reason="Face blurred")
    photo.refresh_from_db()
    assert photo.is_public
    assert [(e.field, e.new_value, e.note) for e in _moderation_entries(loud)] == [
        (f"photo {str(photo.pk)[:8]} is_public", "False", "A face is visible"),
        (f"photo {str(photo.pk)[:8]} is_public", "True", "Face blurred"),
    ]


def test_directors_see_moderation_but_cannot_change_it(client, loud):
    director = staff_user("dee", StaffRole.DIRECTOR)
    client.force_login(director)
    url = reverse("admin:requests_app_servicerequest_change", args=[loud.pk])
    html = client.get(url).content.decode()
    assert MASKED in html and LOUD in html
    assert "id_moderation_reason" not in html
    with pytest.raises(ValidationError):  # and the model insists on a reason
        loud.set_public(False, by=director, reason=" ")


# --- Comments --------------------------------------------------------------------------------


def test_residents_comment_with_a_listed_word_waits_staff_comment_does_not(
    client, pothole, dispatcher
):
    service_request = ServiceRequestFactory(category=pothole, department=pothole.department)
    resident = service_request.add_comment(
        "Still there, fix the damn bullshit hole", public=True, author_label="Resident"
    )
    staff = service_request.add_comment(
        "Bullshit claims aside, crew booked", by=dispatcher, public=True
    )
    assert resident.awaiting_review and not staff.awaiting_review
    html = client.get(service_request.get_absolute_url()).content.decode()
    assert "This comment is awaiting review." in html
    assert "fix the damn" not in html
    assert "crew booked" in html
    assert set(ServiceRequest.objects.awaiting_review()) == {service_request}


def test_staff_approve_or_reword_a_comment_in_its_admin_page(client, pothole, dispatcher):
    service_request = ServiceRequestFactory(category=pothole, department=pothole.department)
    comment = service_request.add_comment(
        "Fix this bullshit, call 555-867-5309", public=True, author_label="Resident"
    )
    client.force_login(dispatcher)
    listing = client.get(reverse("admin:requests_app_comment_changelist"), {"moderation": "review"})
    assert "Fix this bullshit" in listing.content.decode()
    url = reverse("admin:requests_app_comment_change", args=[comment.pk])
    assert "Awaiting review: contains" in client.get(url).content.decode()

    response = client.post(url, {"public_wording": "Please fix this.", "reason": ""})
    assert response.status_code == 200
    response = client.post(url, {"public_wording": "Please fix this.", "reason": "Abusive"})
    assert response.status_code == 302, response.content.decode()[:2000]
    comment.refresh_from_db()
    assert comment.text == "Fix this bullshit, call 555-867-5309"
    assert comment.public_text == "Please fix this."
    (entry,) = _moderation_entries(service_request)
    assert entry.actor == dispatcher and entry.note == "Abusive"
    assert entry.field == f"comment {comment.pk} public_text_override"

    response = client.post(url, {"public_wording": "", "approve": "on", "reason": "Fine after all"})
    assert response.status_code == 302
    comment.refresh_from_db()
    assert comment.public_text == "Fix this bullshit, call [phone number hidden]"


# --- Holding residents' photos ---------------------------------------------------------------


def test_photo_hold_setting_decides_who_starts_public(settings, dispatcher):
    assert Photo.starts_public() is True  # off by default
    settings.MODERATION_HOLD_PHOTOS_FROM_UNVERIFIED = True
    assert Photo.starts_public() is False
    assert Photo.starts_public(by=dispatcher) is True
    assert Photo.starts_public(kind=Photo.Kind.AFTER) is True


def test_held_photo_is_staff_only_until_approved(client, dispatcher, loud, photo_upload, settings):
    settings.MODERATION_HOLD_PHOTOS_FROM_UNVERIFIED = True
    photo = _photo(loud, photo_upload, is_public=Photo.starts_public())
    assert photo.awaiting_approval
    assert client.get(photo.get_absolute_url()).status_code == 404
    assert set(ServiceRequest.objects.with_photos_awaiting_approval()) == {loud}
    client.force_login(dispatcher)
    assert client.get(photo.get_absolute_url()).status_code == 200
    html = client.get(
        reverse("admin:requests_app_servicerequest_changelist"), {"moderation": "photos"}
    )
    assert loud.tracking_number in html.content.decode()
    _admin_post(client, loud, show_photos=[str(photo.pk)], moderation_reason="Looks fine")
    photo.refresh_from_db()
    assert photo.is_public and not photo.awaiting_approval
    client.logout()
    assert client.get(photo.get_absolute_url()).status_code == 200


def test_photos_of_anonymous_reports_are_held_when_the_setting_is_on(
    pothole, dispatcher, photo_upload, settings
):
    settings.MODERATION_HOLD_PHOTOS_FROM_UNVERIFIED = True
    anonymous = request_submit(
        Intake(
            category=pothole,
            description="Hole",
            address="1 Main St",
            photos=[process_photo(photo_upload())],
        )
    )
    by_staff = request_submit(
        Intake(
            category=pothole,
            description="Hole",
            address="1 Main St",
            entered_by=dispatcher,
            photos=[process_photo(photo_upload())],
        )
    )
    assert anonymous.photos.get().awaiting_approval
    assert by_staff.photos.get().is_public
    emailed = photo_attach(by_staff, process_photo(photo_upload()))  # a resident's reply
    assert not emailed.is_public


# --- Withdrawing a report --------------------------------------------------------------------


def _withdraw_url(service_request):
    return reverse("requests_app:withdraw", args=[withdraw_token(service_request.pk)])


def test_received_email_carries_the_withdraw_link_for_the_reporter_only(client, pothole):
    service_request = request_submit(
        Intake(
            category=pothole,
            description="Hole",
            address="1 Main St",
            reporter_email="maria@example.org",
        )
    )
    email = Notification.objects.get(kind=Notification.Kind.RECEIVED)
    notification_send(email.pk)  # the receipt is written when it is sent
    email.refresh_from_db()
    link = re.search(r"https?://\S+/requests/withdraw/\S+/", email.body_text).group(0)
    assert "withdraw" in email.body_html
    response = client.get(urlparse(link).path)
    assert response.status_code == 200
    assert "Withdraw your report from public view?" in response.content.decode()

    follower = Recipient("friend@example.org", "en")
    _subject, text, html = render_email(
        "request_received", {"request": service_request, "recipient": follower}, "en"
    )
    assert "withdraw" not in text.lower() and "withdraw" not in html.lower()


def test_get_asks_and_post_withdraws_into_the_queue_not_out_of_it(client, loud, dispatcher):
    url = _withdraw_url(loud)
    response = client.get(url)
    assert response.status_code == 200
    assert loud.tracking_number in response.content.decode()
    loud.refresh_from_db()
    assert loud.is_public  # a link preview or scanner withdraws nothing
    assert "no-cache" in response["Cache-Control"] or "max-age=0" in response["Cache-Control"]

    response = client.post(url)
    assert response.status_code == 200
    assert "Your report is no longer public" in response.content.decode()
    loud.refresh_from_db()
    assert not loud.is_public and loud.status == Status.ASSIGNED
    assert client.get(loud.get_absolute_url()).status_code == 404
    assert loud in visible_requests(dispatcher)
    (entry,) = _moderation_entries(loud)
    assert (entry.actor, entry.actor_label, entry.field) == (None, "Reporter", "is_public")
    assert entry.note.startswith("Withdrawn by the reporter")

    client.post(url)  # twice: nothing more happens
    assert len(_moderation_entries(loud)) == 1
    assert "not shown to the public" in client.get(url).content.decode()


def test_tampered_withdraw_link_is_refused(client, loud):
    token = withdraw_token(loud.pk)
    other = ServiceRequestFactory(category=loud.category)
    forged = token.replace(signing.b64_encode(b'{"w":%d}' % loud.pk).decode(), "x")
    for bad in (token[:-2] + "xx", forged, withdraw_token(other.pk)[:-1], "nonsense"):
        url = reverse("requests_app:withdraw", args=[bad])
        assert client.post(url).status_code == 400
        assert client.get(url).status_code == 400
    loud.refresh_from_db()
    other.refresh_from_db()
    assert loud.is_public and other.is_public
    assert not HistoryEntry.objects.filter(action=HistoryEntry.Action.MODERATION).exists()


def test_expired_withdraw_link_is_refused(client, loud, monkeypatch, settings):
    settings.WITHDRAW_LINK_MAX_AGE_DAYS = 90
    long_ago = time.time() - 91 * 24 * 3600
    with monkeypatch.context() as patch:
        patch.setattr(signing.time, "time", lambda: long_ago)
        token = withdraw_token(loud.pk)
    url = reverse("requests_app:withdraw", args=[token])
    response = client.post(url)
    assert response.status_code == 400
    assert "This link has expired" in response.content.decode()
    loud.refresh_from_db()
    assert loud.is_public


def test_withdraw_link_for_a_request_that_is_gone_is_refused(client):
    url = reverse("requests_app:withdraw", args=[withdraw_token(987654)])
    assert client.get(url).status_code == 400


def test_comment_model_keeps_the_public_text_apart(pothole):
    service_request = ServiceRequestFactory(category=pothole)
    note = Comment.objects.create(
        request=service_request, text=f"Call {PHONE}", is_public=False, author_label="Dana"
    )
    assert note.public_text == "Call [phone number hidden]"
    assert not note.awaiting_review
