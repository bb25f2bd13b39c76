from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Runs"

    def ready(self) -> None:
        from runs import audit, live  # models are loaded only now

        audit.connect()
        live.connect()
