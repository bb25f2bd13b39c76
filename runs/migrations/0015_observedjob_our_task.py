from django.db import migrations


class Migration(migrations.Migration):
    """ObservedJob.task -> our_task: its ``task_id`` column read like a workflow's task id."""

    dependencies = [("runs", "0014_run_cancelled_by")]

    operations = [migrations.RenameField(model_name="observedjob", old_name="task", new_name="our_task")]
