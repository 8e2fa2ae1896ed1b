"""Give the demo city an address gazetteer, so that address search works out of the box.

Address points on a grid of named streets over the service area, with ZIP codes that follow
seed_demo's districts (routing.gazetteer.generate_demo_addresses). Safe to run again: the
same addresses are found unchanged.
"""

from django.core.management.base import BaseCommand

from routing.gazetteer import demo_addresses_seed


class Command(BaseCommand):
    help = "Load generated address points for the demo city into the address gazetteer."

    def handle(self, *args, **options):
        counts = demo_addresses_seed()
        self.stdout.write(
            self.style.SUCCESS(
                f"Demo addresses ready: {counts['created']} created, {counts['updated']} "
                f"updated, {counts['unchanged']} unchanged; {counts['streets']} streets."
            )
        )
