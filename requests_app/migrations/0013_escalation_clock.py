"""The escalation ladder's progress moves off the request into a narrow clock table.

Every rung the SLA sweep took rewrote the wide request row, and since its next-step time
was indexed, each rewrite added an entry to every one of the request's indexes. The clock
row has two. Existing requests get their clock from the columns it replaces.
"""

import django.db.models.deletion
from django.db import migrations, models

# The open statuses when this migration was written (models.OPEN_STATUSES may change).
OPEN = ("received", "assigned", "scheduled", "in_progress", "waiting")


def fill_clocks(apps, schema_editor):
    # One set-based statement: the table can hold millions of requests.
    marks = ", ".join(["%s"] * len(OPEN))
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO requests_app_escalationclock (request_id, level, next_at) "
            "SELECT id, escalation_level, next_escalation_at FROM requests_app_servicerequest "
            f"WHERE next_escalation_at IS NOT NULL OR escalation_level > 0 OR status IN ({marks})",
            OPEN,
        )


def empty_clocks(apps, schema_editor):
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "UPDATE requests_app_servicerequest SET "
            "escalation_level = COALESCE((SELECT level FROM requests_app_escalationclock c "
            "WHERE c.request_id = requests_app_servicerequest.id), 0), "
            "next_escalation_at = (SELECT next_at FROM requests_app_escalationclock c "
            "WHERE c.request_id = requests_app_servicerequest.id)"
        )


class Migration(migrations.Migration):
    dependencies = [
        ("requests_app", "0012_open_location_index"),
    ]

    operations = [
        migrations.CreateModel(
            name="EscalationClock",
            fields=[
                (
                    "request",
                    models.OneToOneField(
                        on_delete=django.db.models.deletion.CASCADE,
                        primary_key=True,
                        related_name="escalation_clock",
                        serialize=False,
                        to="requests_app.servicerequest",
                    ),
                ),
                (
                    "level",
                    models.PositiveSmallIntegerField(
                        default=0, verbose_name="escalation steps taken"
                    ),
                ),
                (
                    "next_at",
                    models.DateTimeField(
                        blank=True, null=True, verbose_name="next escalation step"
                    ),
                ),
            ],
            options={
                "verbose_name": "escalation clock",
                "verbose_name_plural": "escalation clocks",
            },
        ),
        migrations.RunPython(fill_clocks, empty_clocks),
        migrations.AddIndex(
            model_name="escalationclock",
            index=models.Index(
                condition=models.Q(("next_at__isnull", False)),
                fields=["next_at"],
                name="escalation_clock_due",
            ),
        ),
        migrations.RemoveIndex(
            model_name="servicerequest",
            name="request_next_escalation",
        ),
        migrations.RemoveField(
            model_name="servicerequest",
            name="next_escalation_at",
        ),
        migrations.RemoveField(
            model_name="servicerequest",
            name="escalation_level",
        ),
    ]
