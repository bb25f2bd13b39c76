"""``scripthut pricing import FILE | refresh | recompute``: the EC2 prices tasks are costed with."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.costing import estimate, prices
from runs.models import PortalSettings, Task


class Command(BaseCommand):
    help = (
        "EC2 prices (instances.vantage.sh instances.json format). "
        "import FILE: store the prices in FILE; refresh: read the config's pricing.source now "
        "(both then cost the ended tasks that have no cost yet); "
        "recompute [--run ID]: cost ended tasks again with the stored prices."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        sub = parser.add_subparsers(dest="action", required=True)
        imp = sub.add_parser("import", help="store the prices of an instances.json file")
        imp.add_argument("file")
        sub.add_parser("refresh", help="fetch or re-read pricing.source now")
        again = sub.add_parser("recompute", help="cost ended tasks again")
        again.add_argument("--run", help="only this run's tasks")

    def handle(self, *args: Any, **options: Any) -> None:
        action = options["action"]
        if action == "import":
            try:
                count = prices.import_file(options["file"])
            except prices.PricingError as exc:
                raise CommandError(f"nothing imported: {exc}") from None
            self.stdout.write(f"{count} prices imported from {options['file']}\n")
            self._cost_the_uncosted()
        elif action == "refresh":
            self._refresh()
        else:
            tasks = Task.objects.all() if not options["run"] else Task.objects.filter(run_id=options["run"])
            self.stdout.write(f"{estimate.recompute(tasks)} tasks costed\n")

    def _refresh(self) -> None:
        pricing = PortalSettings.load().pricing
        if not pricing:
            raise CommandError("no pricing block in the imported config")
        prices.PriceList.objects.filter(pk=1).update(next_check_at=None)  # now, not when due
        prices.refresh(pricing)
        stored = prices.PriceList.load()
        if stored.last_error:
            raise CommandError(f"prices not updated: {stored.last_error}")
        self.stdout.write(f"prices from {stored.source} (dated {stored.prices_date:%Y-%m-%d %H:%M} UTC)\n")
        self._cost_the_uncosted()

    def _cost_the_uncosted(self) -> None:
        """Tasks that ended while no prices could be read get a cost now; costed ones keep theirs."""
        costed = estimate.recompute(Task.objects.filter(cost__isnull=True))
        if costed:
            self.stdout.write(f"{costed} ended tasks without a cost costed now\n")
