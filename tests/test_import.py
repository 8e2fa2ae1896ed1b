"""The historic import, on real 311 exports from New York, Los Angeles and Boston."""

import csv
import io
import json
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from django.core.management import CommandError, call_command

from requests_app.models import (
    CloseReason,
    Department,
    EscalationClock,
    HistoryEntry,
    ServiceCategory,
    ServiceRequest,
    Status,
)

from .conftest import ROOT, SHARED_DATA

pytestmark = pytest.mark.django_db
MAPPINGS = ROOT / "requests_app" / "import_mappings"
NYC = SHARED_DATA / "nyc" / "nyc311_2014-2019_sample_TwoSixDgraphDemo.csv"
LA = SHARED_DATA / "la" / "la311_2020_seed_requests.csv"
LA_2017 = SHARED_DATA / "la" / "MyLA311_Service_Request_Data_2017_Subset.csv"
BOSTON = SHARED_DATA / "boston" / "boston311-100.csv"

if not NYC.exists():
    pytest.skip(f"no shared 311 data at {SHARED_DATA}", allow_module_level=True)


def run(path, mapping, *args):
    out = io.StringIO()
    call_command(
        "import_requests",
        str(path),
        "--mapping",
        str(MAPPINGS / mapping),
        "--quiet-progress",
        *args,
        stdout=out,
    )
    return out.getvalue()


def test_nyc_import_creates_requests_categories_departments_and_history(mailoutbox):
    output = run(NYC, "nyc.json")
    assert "1000 rows read: 990 created" in output
    assert "10  closed before it was created" in output
    assert ServiceRequest.objects.filter(import_source="nyc311").count() == 990
    assert ServiceCategory.objects.count() == 101
    assert Department.objects.count() == 16
    request = ServiceRequest.objects.get(import_source="nyc311", external_id="39573567")
    ny = ZoneInfo("America/New_York")
    assert request.created_at == datetime(2018, 6, 26, 10, 58, 54, tzinfo=ny)
    assert request.resolved_at == datetime(2018, 6, 26, 12, 50, 1, tzinfo=ny)
    assert request.due_at == datetime(2018, 6, 26, 18, 58, 54, tzinfo=ny)
    assert request.status == Status.COMPLETED and request.channel == "phone"
    assert request.category.name == "Non-Emergency Police Matter"
    assert request.department.name == "New York City Police Department"
    assert (request.lat, request.lng) == pytest.approx((40.690092, -73.846428))
    assert request.tracking_number.startswith("CD-")
    # Written directly: processed, no routing, no emails, one CREATED entry each.
    assert request.intake_processed_at is not None
    assert not EscalationClock.objects.filter(request=request, next_at__isnull=False).exists()
    assert list(request.history.values_list("action", flat=True)) == [HistoryEntry.Action.CREATED]
    assert HistoryEntry.objects.count() == 990
    assert mailoutbox == []
    duplicates = ServiceRequest.objects.filter(close_reason=CloseReason.DUPLICATE)
    assert duplicates.count() == 38  # the README's count of "duplicate" resolutions
    assert set(duplicates.values_list("status", flat=True)) == {Status.CLOSED}


def test_running_the_import_again_updates_instead_of_duplicating(tmp_path):
    run(NYC, "nyc.json")
    ids = dict(ServiceRequest.objects.values_list("external_id", "tracking_number"))
    output = run(NYC, "nyc.json")
    assert "0 created, 0 updated, 990 unchanged" in output
    assert ServiceRequest.objects.count() == 990
    # The source closes a request that was open: the re-run updates that one row.
    rows = list(csv.DictReader(NYC.open()))
    open_row = next(r for r in rows if r["Status"] == "Open")
    open_row["Status"], open_row["Closed Date"] = "Closed", "12/31/2019 09:00:00 AM"
    changed = tmp_path / "nyc-changed.csv"
    with changed.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=rows[0].keys())
        writer.writeheader()
        writer.writerows(rows)
    output = run(changed, "nyc.json")
    assert "0 created, 1 updated, 989 unchanged" in output
    assert dict(ServiceRequest.objects.values_list("external_id", "tracking_number")) == ids
    request = ServiceRequest.objects.get(external_id=open_row["Unique Key"])
    assert request.status == Status.COMPLETED and request.resolved_at is not None
    last = request.history.last()
    assert (last.old_value, last.new_value) == ("received", "completed")


def test_la_import_maps_channels_agencies_and_cancellations():
    output = run(LA, "la.json", "--limit", "3000")
    assert "3000 rows read: 3000 created" in output
    la = ServiceRequest.objects.filter(import_source="la311")
    assert la.filter(category__name="Bulky Items").exists()
    assert Department.objects.filter(name="Bureau of Sanitation").exists()
    assert set(la.values_list("channel", flat=True)) <= {"phone", "api", "web", "email"}
    cancelled = la.filter(status=Status.CLOSED)
    assert cancelled.exists()
    assert set(cancelled.values_list("close_reason", flat=True)) <= {"withdrawn", "referred"}
    first = la.get(external_id="1-1523590121")
    assert first.created_at == datetime(2020, 1, 1, 0, 5, tzinfo=ZoneInfo("America/Los_Angeles"))


def test_la_2017_layout_imports_too():
    output = run(LA_2017, "la_2017.json", "--limit", "500")
    assert "500 rows read" in output and "created" in output
    assert ServiceRequest.objects.filter(import_source="la311").count() >= 490


def test_boston_import_keeps_due_dates_and_drops_placeholder_locations():
    output = run(BOSTON, "boston.json")
    assert "100 rows read: 100 created" in output
    boston = ServiceRequest.objects.filter(import_source="boston311")
    request = boston.get(external_id="101004143000")
    assert request.status == Status.RECEIVED and request.resolved_at is None
    # 42.3594,-71.0587 is City Hall, the source's "no location".
    assert request.lat is None and request.lng is None
    assert boston.filter(due_at__isnull=False).count() > 80
    assert boston.filter(close_reason=CloseReason.DUPLICATE).count() >= 4
    assert ServiceCategory.objects.get(name="Needle Pickup").group == "Needle Program"


def test_rejected_rows_are_reported_with_reasons(tmp_path):
    source = tmp_path / "bad.csv"
    source.write_text(
        "case_enquiry_id,open_dt,target_dt,closed_dt,case_status,type,reason,department,"
        "source,latitude,longitude,location,closure_reason,case_title\n"
        "1,2022-01-01 10:00:00,,,Open,Pothole,Streets,PWDx,Self Service,42.35,-71.06,,,\n"
        ",2022-01-01 10:00:00,,,Open,Pothole,Streets,PWDx,Self Service,,,,,\n"
        "3,yesterday,,,Open,Pothole,Streets,PWDx,Self Service,,,,,\n"
        "4,2022-01-01 10:00:00,,,Lost,Pothole,Streets,PWDx,Self Service,,,,,\n"
        "5,2022-01-01 10:00:00,,,Open,,Streets,PWDx,Self Service,,,,,\n"
        "6,2022-01-01 10:00:00,,,Open,Pothole,Streets,PWDx,Self Service,142.0,-71.06,,,\n"
    )
    rejects = tmp_path / "rejects.csv"
    output = run(source, "boston.json", "--rejects", str(rejects))
    assert "6 rows read: 1 created" in output and "5 rejected" in output
    for reason in (
        "no id",
        "unreadable created_at",
        "unknown status",
        "no category",
        "lat out of range",
    ):
        assert reason in output
    rows = list(csv.DictReader(rejects.open()))
    assert [r["line"] for r in rows] == ["3", "4", "5", "6", "7"]
    assert rows[2]["reason"] == "unknown status 'Lost'"


def test_dry_run_saves_nothing():
    output = run(BOSTON, "boston.json", "--dry-run")
    assert "Dry run" in output and ServiceRequest.objects.count() == 0


def test_a_mapping_with_an_unknown_status_is_refused(tmp_path):
    mapping = json.loads((MAPPINGS / "boston.json").read_text())
    mapping["status_map"]["Open"] = "pending"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(mapping))
    with pytest.raises(CommandError, match="not a CivicDesk status"):
        call_command("import_requests", str(BOSTON), "--mapping", str(bad))
