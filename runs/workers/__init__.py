"""Who ticks the engine: the embedded ticker thread, or Celery beat and workers."""
