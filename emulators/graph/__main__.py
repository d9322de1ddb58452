"""`python -m emulators.graph --port P --ca-file F`: run the Graph emulator until SIGTERM/Ctrl-C.

Serves Entra's token endpoints, Graph v1.0 and `/_emulator` over HTTPS with cheroot's threaded
server (emulators.serving), writes the CA certificate to F, starts the notification sender and
prints `graph emulator ready at https://HOST:PORT` once it accepts connections. With
`--service-account EMAIL` it also has the mailbox an admin signs in as at Authorize.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from emulators.graph.app import create_app
from emulators.graph.auth import add_service_account
from emulators.graph.faults import Faults
from emulators.graph.notify import Notifier
from emulators.graph.seed import seed
from emulators.graph.store import Settings, Store
from emulators.graph.tls import server_files
from emulators.serving import serve

PROG_NAME_VARIABLE = "EXSYNC_EMULATOR_PROG_NAME"


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=click.IntRange(0, 65535), required=True)
@click.option(
    "--ca-file",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="Where to write the CA certificate clients must trust.",
)
@click.option(
    "--hostname",
    "hostnames",
    multiple=True,
    help="Another name clients use for this host (added to the certificate).",
)
@click.option(
    "--allow-http",
    "http_hosts",
    multiple=True,
    help="A host that may get plain-http notifications (Graph allows only https; "
    "loopback is always allowed), e.g. a compose service name.",
)
@click.option("--tenant", default="8c3f5a52-6b0e-4c1f-9a57-2f1d0c5e7b10", show_default=True)
@click.option("--client-id", default="exsync-demo-app", show_default=True)
@click.option("--client-secret", default="exsync-demo-secret", show_default=True)
@click.option(
    "--users",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="Seeded mailboxes user1@DOMAIN ... userN@DOMAIN, each with a few events.",
)
@click.option(
    "--events-per-user",
    type=click.IntRange(0),
    default=0,
    show_default=True,
    help="More one-hour busy meetings in each seeded mailbox (benchmarks).",
)
@click.option("--domain", default="contoso.example", show_default=True)
@click.option(
    "--service-account",
    default="",
    help="A mailbox to sign in as at Authorize (e.g. sync@contoso.example), named on the sign-in "
    "page; every seeded mailbox's calendar is shared with it (write), for delegated access.",
)
@click.option(
    "--max-concurrency",
    type=click.IntRange(1),
    default=4,
    show_default=True,
    help="Requests in flight per app and mailbox before 429 MailboxConcurrency.",
)
@click.option(
    "--rate-limit",
    type=click.IntRange(1),
    default=10_000,
    show_default=True,
    help="Requests per app and mailbox per --rate-window before 429.",
)
@click.option(
    "--rate-window",
    type=click.FloatRange(min=0.001),
    default=600.0,
    show_default=True,
    help="Seconds.",
)
@click.option(
    "--notify-retry-scale",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="Multiplies notification retry and slow-endpoint delays.",
)
@click.option("--token-lifetime", type=click.IntRange(1), default=3600, show_default=True)
@click.option(
    "--latency",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds each mailbox call takes (to exercise concurrency limits).",
)
def main(
    host: str, port: int, ca_file: Path, hostnames: tuple[str, ...],
    http_hosts: tuple[str, ...], tenant: str, client_id: str, client_secret: str,
    users: int, events_per_user: int, domain: str, service_account: str, max_concurrency: int,
    rate_limit: int, rate_window: float, notify_retry_scale: float, token_lifetime: int,
    latency: float,
) -> None:  # fmt: skip
    """Run the Microsoft Graph emulator."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    for noisy in ("cheroot", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    settings = Settings(
        tenant=tenant, client_id=client_id, client_secret=client_secret,
        max_concurrency=max_concurrency, rate_limit=rate_limit, rate_window=rate_window,
        notify_retry_scale=notify_retry_scale, token_lifetime=token_lifetime, latency=latency,
        http_hosts=frozenset(h.lower() for h in http_hosts),
    )  # fmt: skip
    store = Store(settings)
    faults = Faults()
    notifier = Notifier(store, faults)
    app = create_app(store, notifier, faults)
    seed(store, users, domain, events_per_user)
    if service_account:
        add_service_account(app, store, service_account)
    tls = server_files(ca_file, [host, *hostnames])
    notifier.start()
    try:
        serve(app, host, port, lambda bound: _ready(f"https://{host}:{bound}"), tls=tls)
    finally:
        notifier.stop()


def _ready(url: str) -> None:
    print(f"graph emulator ready at {url}", flush=True)


if __name__ == "__main__":
    # `exsync emulate SERVICE` runs this module and names itself here, so usage and errors show
    # the command that was typed, not `python -m emulators.SERVICE`.
    sys.exit(main(prog_name=os.environ.get(PROG_NAME_VARIABLE)))
