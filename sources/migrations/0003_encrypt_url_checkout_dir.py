"""A git source's URL may carry a password or token: it is now stored encrypted. And the
sync keeps the absolute path of its checkout (``checkout_dir``).

The column becomes text, every existing URL is encrypted in place (with the newest key
of SCRIPTHUT_SECRET_KEYS / fernet.keys), then the field is the encrypted one.
"""

from django.db import migrations, models

import scripthut_site.crypto
from scripthut_site import crypto


def encrypt_urls(apps, schema_editor):
    Source = apps.get_model("sources", "Source")
    for pk, url in Source.objects.values_list("pk", "url"):
        if url:
            Source.objects.filter(pk=pk).update(url=crypto.encrypt(url))


def decrypt_urls(apps, schema_editor):
    Source = apps.get_model("sources", "Source")
    for pk, url in Source.objects.values_list("pk", "url"):
        if url:
            Source.objects.filter(pk=pk).update(url=crypto.decrypt(url)[:500])


class Migration(migrations.Migration):

    dependencies = [
        ("sources", "0002_allowed_groups"),
    ]

    operations = [
        migrations.AddField(model_name="source", name="checkout_dir", field=models.CharField(blank=True, max_length=1000)),
        migrations.AlterField(model_name="source", name="url", field=models.TextField(blank=True)),
        migrations.RunPython(encrypt_urls, decrypt_urls),
        migrations.AlterField(
            model_name="source",
            name="url",
            field=scripthut_site.crypto.EncryptedTextField(blank=True),
        ),
    ]
