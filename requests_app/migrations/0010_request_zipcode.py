from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("requests_app", "0009_moderation"),
    ]

    operations = [
        migrations.AddField(
            model_name="servicerequest",
            name="zipcode",
            field=models.CharField(
                blank=True, db_default="", default="", max_length=10, verbose_name="ZIP code"
            ),
        ),
    ]
