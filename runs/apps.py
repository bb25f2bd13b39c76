from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        from runs import checks  # noqa: F401  (registers them)
        from runs.audit import trail  # models are loaded only now
        from runs.live import push
        from runs.workers import ticker

        trail.connect()
        push.connect()
        ticker.connect()
