"""Workflow documents: the JSON format, one task's definition and limits, configured workflow commands."""
