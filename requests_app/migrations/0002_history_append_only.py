from django.db import migrations

from requests_app import history_guard


def install(apps, schema_editor):
    history_guard.install(schema_editor.connection)


def uninstall(apps, schema_editor):
    history_guard.uninstall(schema_editor.connection)


class Migration(migrations.Migration):
    dependencies = [("requests_app", "0001_initial")]

    operations = [migrations.RunPython(install, uninstall)]
