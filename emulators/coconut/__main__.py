"""`python -m emulators.coconut --port P`: run the Coconut emulator until SIGTERM or Ctrl-C.

Serves the admin API at `/api/v2/b2b` with cheroot's threaded server (emulators.serving:
requests in parallel on kept-alive connections, as a real SaaS answers them), starts the
webhook sender threads, and prints
`coconut emulator ready at http://HOST:PORT` once it accepts connections.
"""

from __future__ import annotations

import logging
import os
import sys

import click

from emulators.coconut.app import create_app
from emulators.coconut.deliveries import Sender
from emulators.coconut.seed import seed as seed_tenant
from emulators.coconut.store import EVENTS, Settings, Store
from emulators.serving import serve

PROG_NAME_VARIABLE = "EXSYNC_EMULATOR_PROG_NAME"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, required=True)
@click.option("--webhook-url", default=None, help="Pre-register a subscription to every event.")
@click.option("--webhook-secret", default=None, help="Its signing secret (16+ characters).")
@click.option(
    "--retry-scale",
    type=float,
    default=1.0,
    show_default=True,
    help="Multiplies the redelivery schedule (30 s, 2 min, 10 min, ...).",
)
@click.option(
    "--staff",
    type=int,
    default=3,
    show_default=True,
    help="Seeded staff who take appointments: user1@DOMAIN ... userN@DOMAIN.",
)
@click.option(
    "--bookings-per-staff",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="More one-hour bookings for each seeded staff member (benchmarks).",
)
@click.option("--domain", default="contoso.example", show_default=True)
@click.option("--client-id", default="exsync-demo", show_default=True)
@click.option("--client-secret", default="coconut-demo-secret", show_default=True)
@click.option("--tenant", default="bank", show_default=True, help="Subdomain in payloads.")
@click.option(
    "--rate-limit",
    type=int,
    default=600,
    show_default=True,
    help="Requests per client per 60 seconds before 429.",
)
@click.option("--token-lifetime", type=int, default=3600, show_default=True)
@click.option("--max-attempts", type=int, default=8, show_default=True)
@click.option(
    "--disable-after",
    type=int,
    default=10,
    show_default=True,
    help="Consecutive failed attempts that disable a subscription.",
)
@click.option("--seed/--no-seed", default=True, show_default=True)
def main(
    host: str,
    port: int,
    webhook_url: str | None,
    webhook_secret: str | None,
    retry_scale: float,
    staff: int,
    bookings_per_staff: int,
    domain: str,
    client_id: str,
    client_secret: str,
    tenant: str,
    rate_limit: int,
    token_lifetime: int,
    max_attempts: int,
    disable_after: int,
    seed: bool,
) -> None:
    """Run the Coconut admin API emulator."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("cheroot", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    if webhook_secret and not webhook_url:
        raise click.UsageError("--webhook-secret needs --webhook-url")
    if retry_scale < 0 or staff < 0 or rate_limit < 1 or token_lifetime < 1:
        raise click.UsageError("--retry-scale/--staff must be >= 0, limits and lifetimes >= 1")
    settings = Settings(
        token_lifetime=token_lifetime,
        rate_limit=rate_limit,
        retry_scale=retry_scale,
        max_attempts=max_attempts,
        disable_after=disable_after,
    )
    store = Store(client_id, client_secret, f"{tenant}.coconutcalendar.com", settings)
    if seed:
        seed_tenant(store, staff, domain, bookings=bookings_per_staff)
    if webhook_url:
        attrs: dict[str, object] = {"url": webhook_url, "events": list(EVENTS)}
        if webhook_secret:
            attrs["secret"] = webhook_secret
        try:
            store.create_webhook(attrs)
        except Exception as exc:  # an ApiError naming the bad url or secret
            raise click.UsageError(f"--webhook-url/--webhook-secret: {exc}") from None
    sender = Sender(store)
    sender.start()
    try:
        serve(create_app(store), host, port, lambda bound: _ready(f"http://{host}:{bound}"))
    finally:
        sender.stop()


def _ready(url: str) -> None:
    print(f"coconut emulator ready at {url}", flush=True)


if __name__ == "__main__":
    # `exsync emulate SERVICE` runs this module and names itself here, so usage and errors show
    # the command that was typed, not `python -m emulators.SERVICE`.
    sys.exit(main(prog_name=os.environ.get(PROG_NAME_VARIABLE)))
