import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models

# The index Django made for the actor foreign key (its name is derived from the table and
# the column, so it is the same in every database).
ACTOR_INDEX = "requests_app_history_actor_id_6058cbf3"


class Migration(migrations.Migration):
    dependencies = [
        ("requests_app", "0014_rollup_refresh_indexes"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # Only the index goes: AlterField would also drop and re-add the foreign key,
        # checking every history entry again while the table is locked.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="historyentry",
                    name="actor",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to=settings.AUTH_USER_MODEL,
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    f"DROP INDEX IF EXISTS {ACTOR_INDEX}",
                    f"CREATE INDEX {ACTOR_INDEX} ON requests_app_history (actor_id)",
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="historyentry",
            index=models.Index(
                condition=models.Q(("actor__isnull", False)),
                fields=["actor"],
                name="history_by_actor",
            ),
        ),
    ]
