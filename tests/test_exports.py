# ruff: noqa: F811  (the hand-built city fixtures are shared from test_dashboard.py)
"""Exports: streamed CSV and GeoJSON, background jobs, and the per-request audit package.

Uses the hand-built city of test_dashboard.py (R1–R8, 1–10 March 2024).
"""

import io
import json
import zipfile

import pytest
from django.urls import reverse

from requests_app import export_tasks
from requests_app.export_tasks import run_export
from requests_app.models import ExportJob, Photo, ServiceRequest, StaffRole

from .factories import staff_user
from .test_dashboard import PERIOD, city, director, urlpatterns  # noqa: F401

pytestmark = [pytest.mark.urls(__name__), pytest.mark.django_db]


def _personal_data():
    values = []
    for r in ServiceRequest.objects.all():
        values += [r.reporter_name, r.reporter_email, r.reporter_phone]
    return [v for v in values if v]


def _csv(response):
    return b"".join(response.streaming_content).decode()


def test_csv_export_streams_filtered_rows_and_contact_only_for_dispatch(city, client, director):
    query = {"start": "2024-03-01", "end": "2024-03-10", "department": city["streets"].pk}
    client.force_login(director)
    response = client.get(reverse("dashboard:export_csv"), query)
    assert response.streaming
    text = _csv(response)
    lines = text.strip().splitlines()
    assert len(lines) == 1 + 3  # header + R1, R2, R5
    assert "reporter_email" not in lines[0]
    for secret in _personal_data():
        assert secret not in text
    client.force_login(staff_user("dan", StaffRole.DISPATCHER))
    text = _csv(client.get(reverse("dashboard:export_csv"), query))
    assert "reporter_email" in text.splitlines()[0] and "r1@resident.example" in text


def test_csv_export_from_the_admin_list_parameters(city, client, director):
    client.force_login(director)
    response = client.get(
        reverse("dashboard:export_csv"),
        {
            "created_at__gte": "2024-03-01",
            "created_at__lt": "2024-03-11",
            "department__id__exact": city["parks"].pk,
        },
    )
    assert len(_csv(response).strip().splitlines()) == 1 + 2


def test_csv_cells_cannot_start_formulas(city, client, director):
    ServiceRequest.objects.filter(pk=city["R1"].pk).update(description='=HYPERLINK("x")')
    client.force_login(director)
    text = _csv(
        client.get(reverse("dashboard:export_csv"), {"start": "2024-03-01", "end": "2024-03-10"})
    )
    assert "'=HYPERLINK" in text


def test_geojson_export_has_points_and_no_contact(city, client):
    client.force_login(staff_user("dan", StaffRole.DISPATCHER))
    response = client.get(
        reverse("dashboard:export_geojson"), {"start": "2024-03-01", "end": "2024-03-10"}
    )
    data = json.loads(b"".join(response.streaming_content))
    assert len(data["features"]) == 5
    first = data["features"][0]
    assert first["geometry"] == {"type": "Point", "coordinates": [-71.1001, 42.3001]}
    assert first["properties"]["tracking_number"] == city["R1"].tracking_number
    text = json.dumps(data)
    for secret in _personal_data():
        assert secret not in text


def test_background_export_job_writes_the_file_and_only_its_owner_downloads(
    city, client, director, django_capture_on_commit_callbacks
):
    client.force_login(director)
    with django_capture_on_commit_callbacks() as callbacks:
        response = client.get(
            reverse("dashboard:export_csv"),
            {"start": "2024-03-01", "end": "2024-03-10", "background": "1"},
        )
    job = ExportJob.objects.get()
    assert response.status_code == 302 and response["Location"] == reverse(
        "dashboard:export_job", args=[job.pk]
    )
    assert len(callbacks) == 1
    assert job.status == ExportJob.Status.PENDING and job.filters["start"] == "2024-03-01"
    assert "Waiting" in client.get(response["Location"]).content.decode()

    run_export(job.pk)
    run_export(job.pk)  # a second delivery changes nothing
    job.refresh_from_db()
    assert job.status == ExportJob.Status.DONE
    assert (job.rows_total, job.rows_done) == (5, 5)
    page = client.get(reverse("dashboard:export_job", args=[job.pk])).content.decode()
    assert "Download" in page
    download = client.get(reverse("dashboard:export_download", args=[job.pk]))
    lines = b"".join(download.streaming_content).decode().strip().splitlines()
    assert len(lines) == 6
    client.force_login(staff_user("dan", StaffRole.DISPATCHER))
    assert client.get(reverse("dashboard:export_download", args=[job.pk])).status_code == 404


def test_export_job_that_fails_says_why(city, director, monkeypatch):
    job = ExportJob.objects.create(requested_by=director, filters=PERIOD.as_dict())

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(export_tasks, "write_export", broken)
    export_tasks.run_export(job.pk)
    job.refresh_from_db()
    assert job.status == ExportJob.Status.FAILED and "disk full" in job.error


def _zip(response):
    return zipfile.ZipFile(io.BytesIO(b"".join(response.streaming_content)))


def test_audit_package_staff_and_public_versions(city, client, photo_upload):
    r1 = city["R1"]
    Photo.objects.create(request=r1, image=photo_upload(), thumbnail=photo_upload(), is_public=True)
    r1.record("created", note="Received via web")
    client.force_login(staff_user("dan", StaffRole.DISPATCHER))
    url = reverse("dashboard:audit_package", args=[r1.tracking_number])
    staff = _zip(client.get(url))
    names = staff.namelist()
    assert {"request.json", "timeline.json", "comments.json", "photos.json"} <= set(names)
    assert any(n.startswith("photos/") and n.endswith(".jpg") for n in names)
    comments = json.loads(staff.read("comments.json"))
    assert {c["text"] for c in comments} == {"Called R1 back", "Crew on site"}
    assert json.loads(staff.read("request.json"))["reporter_email"] == "r1@resident.example"
    photos = json.loads(staff.read("photos.json"))
    assert photos[0]["uploaded_at"] and photos[0]["location"] == {"lat": 42.3001, "lng": -71.1001}

    public = _zip(client.get(url, {"version": "public"}))
    text = b"".join(public.read(n) for n in public.namelist()).decode(errors="replace")
    assert "Crew on site" in text and "Called R1 back" not in text
    for secret in _personal_data():
        assert secret not in text


def test_audit_package_of_an_invisible_request_is_404(city, client):
    client.force_login(staff_user("pat", StaffRole.DEPARTMENT_STAFF, city["parks"]))
    url = reverse("dashboard:audit_package", args=[city["R1"].tracking_number])
    assert client.get(url).status_code == 404
