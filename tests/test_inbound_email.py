"""Email from residents: a new report, or a reply that joins its request."""

import pytest
from anymail.inbound import AnymailInboundMessage
from anymail.signals import AnymailInboundEvent, inbound

from notifications.models import InboundEmail, Notification
from requests_app.models import Channel, Comment, Follower, ServiceRequest

from .factories import ServiceRequestFactory
from .photos import make_image

pytestmark = pytest.mark.django_db

_ids = iter(range(1, 10_000))


def receive(subject, text, sender="Maria Lopez <maria@example.org>", attachments=(), **headers):
    headers.setdefault("Message-ID", f"<m{next(_ids)}@mail.example.org>")
    message = AnymailInboundMessage.construct(
        from_email=sender,
        to="311@city.example",
        subject=subject,
        text=text,
        headers=headers,
        attachments=[
            AnymailInboundMessage.construct_attachment(content_type, content, filename=name)
            for name, content_type, content in attachments
        ],
    )
    inbound.send(
        sender=object,
        event=AnymailInboundEvent(event_type="inbound", message=message),
        esp_name="TestESP",
    )
    return message


def test_new_email_becomes_a_request_in_the_triage_queue_with_its_photos(
    settings, django_capture_on_commit_callbacks
):
    settings.INBOUND_EMAIL_CATEGORY = "email"
    with django_capture_on_commit_callbacks(execute=True):
        receive(
            "Broken streetlight",
            "The light on the corner of Elm and 3rd has been out for a week.\n\n-- \nMaria",
            attachments=[
                ("light.jpg", "image/jpeg", make_image()),
                ("notes.pdf", "application/pdf", b"%PDF-1.4 not a photo"),
            ],
        )
    request = ServiceRequest.objects.get()
    assert request.channel == Channel.EMAIL and request.category.code == "email"
    assert request.reporter_email == "maria@example.org" and request.reporter_name == "Maria Lopez"
    assert request.description.startswith("Broken streetlight\n\nThe light on the corner")
    assert "-- \nMaria" not in request.description
    assert request.photos.count() == 1
    note = Comment.objects.get(request=request, is_public=False)
    assert "notes.pdf" in note.text
    request.refresh_from_db()
    assert request.department is None  # the triage queue
    assert Notification.objects.get(request=request).kind == "received"
    assert InboundEmail.objects.get().outcome == "new_request"


def test_an_existing_category_is_used_for_email(pothole, settings):
    settings.INBOUND_EMAIL_CATEGORY = "pothole"
    receive("Hole", "Big hole")
    assert ServiceRequest.objects.get().category == pothole


def test_reply_with_tracking_number_becomes_a_public_comment(pothole):
    request = ServiceRequestFactory(category=pothole)
    Follower.objects.create(request=request, email="jo@example.org", source="follow")
    receive(
        f"Re: {request.tracking_number.lower().replace('-', ' ')} is now: Assigned",
        "It got bigger after the rain.\n\nOn Mon, 3 Nov 2026, Demo City 311 wrote:\n"
        "> Your report ... Stop emails: http://127.0.0.1:8000/notifications/unsubscribe/x/",
    )
    assert ServiceRequest.objects.count() == 1
    comment = Comment.objects.get(request=request)
    assert comment.is_public and comment.author_label == "Resident"
    assert comment.text == "It got bigger after the rain."
    # Nobody is emailed the resident's own words: not the author, not other followers.
    assert not Notification.objects.filter(kind="comment").exists()
    assert InboundEmail.objects.get().outcome == "comment"


def test_reply_from_a_stranger_stays_internal(pothole):
    request = ServiceRequestFactory(category=pothole)
    receive(f"Re: {request.tracking_number}", "Spam spam", sender="mallory@example.net")
    comment = Comment.objects.get(request=request)
    assert not comment.is_public and "mallory@example.net" in comment.author_label


def test_unknown_tracking_number_is_a_new_request(pothole):
    receive("Re: CD-2222-3333 still broken", "Help")
    assert ServiceRequest.objects.get().channel == Channel.EMAIL


def test_redelivered_webhook_is_handled_once():
    receive("Hole", "Big hole", **{"Message-ID": "<same@mail.example.org>"})
    receive("Hole", "Big hole", **{"Message-ID": "<same@mail.example.org>"})
    assert ServiceRequest.objects.count() == 1 and InboundEmail.objects.count() == 1


def test_auto_replies_are_ignored():
    receive("Out of office", "I am away", **{"Auto-Submitted": "auto-replied"})
    assert not ServiceRequest.objects.exists()
    assert InboundEmail.objects.get().outcome == "ignored"
