"""Background exports: the worker writes the file while the requester watches the job page.

The ExportJob row is the promise; `run_export` carries it out. It claims the job with a
conditional UPDATE (pending → running), so a task delivered twice writes the file once, and
it re-applies `visible_requests` (for an export from the admin's list, the admin's own
queryset, which is built on it) for the requester at run time, so an export never shows
more than its requester may see when it is written. `sweep_exports` re-sends jobs whose
enqueueing was lost (broker down at the time) and fails jobs whose worker died.
"""

import io
import logging
import tempfile
from datetime import timedelta

from celery import shared_task
from django.core.files import File
from django.db import transaction
from django.utils import timezone

from civicdesk.celery import enqueue_on_commit

from .access import visible_requests
from .dashboard import Filters
from .exports import write_export
from .models import ExportJob

logger = logging.getLogger(__name__)

PROGRESS_EVERY = 2000
RESEND_AFTER = timedelta(minutes=2)
RUNNING_FOR_AT_MOST = timedelta(hours=2)
# In ExportJob.filters of an export from the admin's request list: that list's query string
# (filters, search), which the worker applies through the admin itself. Its start and end
# only describe the job (the days the rows were received).
ADMIN_LIST = "admin_list"


def export_queryset(job):
    if ADMIN_LIST in job.filters:
        from .admin import listed_requests  # the admin builds on this module

        return listed_requests(job.requested_by, job.filters[ADMIN_LIST])
    return Filters.from_dict(job.filters).apply(visible_requests(job.requested_by))


def export_start(job):
    """Enqueue a job just created (after the transaction that created it commits)."""
    enqueue_on_commit(run_export, job.pk)


@shared_task(name="requests_app.export_tasks.run_export")
def run_export(job_id):
    claimed = ExportJob.objects.filter(pk=job_id, status=ExportJob.Status.PENDING).update(
        status=ExportJob.Status.RUNNING, rows_done=0
    )
    if not claimed:
        return  # gone, or another delivery of this task has it
    job = ExportJob.objects.select_related("requested_by").get(pk=job_id)
    requests = export_queryset(job)
    try:
        job.rows_total = requests.count()
        job.save(update_fields=["rows_total"])

        def progress(rows):
            ExportJob.objects.filter(pk=job.pk).update(rows_done=rows)

        with tempfile.TemporaryFile("w+b") as raw:
            text = io.TextIOWrapper(raw, encoding="utf-8", newline="")
            rows = write_export(
                requests, job.format, job.requested_by, text, progress, PROGRESS_EVERY
            )
            text.flush()
            raw.seek(0)
            stamp = timezone.localtime().strftime("%Y%m%d-%H%M%S")
            extension = "csv" if job.format == ExportJob.Format.CSV else "geojson"
            with transaction.atomic():
                job.file.save(f"requests-{stamp}-{job.pk}.{extension}", File(raw), save=False)
                ExportJob.objects.filter(pk=job.pk).update(
                    file=job.file.name,
                    rows_done=rows,
                    status=ExportJob.Status.DONE,
                    finished_at=timezone.now(),
                )
            text.detach()
    except Exception as error:
        logger.exception("Export %s failed", job.pk)
        ExportJob.objects.filter(pk=job.pk).update(
            status=ExportJob.Status.FAILED, error=str(error)[:2000], finished_at=timezone.now()
        )


@shared_task(name="requests_app.export_tasks.sweep_exports")
def sweep_exports():
    now = timezone.now()
    stale = ExportJob.objects.filter(
        status=ExportJob.Status.RUNNING, created_at__lt=now - RUNNING_FOR_AT_MOST
    )
    stale.update(
        status=ExportJob.Status.FAILED,
        error="The export stopped (worker lost); please start it again.",
        finished_at=now,
    )
    for pk in ExportJob.objects.filter(
        status=ExportJob.Status.PENDING, created_at__lt=now - RESEND_AFTER
    ).values_list("pk", flat=True):
        run_export.apply_async(args=[pk])
