"""Runs on a schedule: a configured workflow or a source's workflow file, started as its
owner at the times of a cron expression in a time zone (``models``: the schedule;
``timing``: cron parsing and next fire times; ``fire``: starting the due ones, exactly once
per due time, called by beat's dispatch and by the embedded ticker)."""
