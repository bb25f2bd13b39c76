"""A workflow's git block holds a repository URL that may carry a password or token: the
block is now stored encrypted (as text). Existing blocks are encrypted in place."""

import json

from django.db import migrations, models

import scripthut_site.crypto
from scripthut_site import crypto


def encrypt_blocks(apps, schema_editor):
    Workflow = apps.get_model("runs", "Workflow")
    for pk, text in Workflow.objects.values_list("pk", "git"):
        value = json.loads(text) if text else None
        token = crypto.encrypt(json.dumps(value, sort_keys=True)) if value is not None else None
        Workflow.objects.filter(pk=pk).update(git=token)


def decrypt_blocks(apps, schema_editor):
    Workflow = apps.get_model("runs", "Workflow")
    for pk, token in Workflow.objects.values_list("pk", "git"):
        if token:
            Workflow.objects.filter(pk=pk).update(git=crypto.decrypt(token))


class Migration(migrations.Migration):

    dependencies = [
        ("runs", "0018_verified_email"),
    ]

    operations = [
        migrations.AlterField(model_name="workflow", name="git", field=models.TextField(blank=True, null=True)),
        migrations.RunPython(encrypt_blocks, decrypt_blocks),
        migrations.AlterField(
            model_name="workflow",
            name="git",
            field=scripthut_site.crypto.EncryptedJSONField(blank=True, null=True),
        ),
    ]
