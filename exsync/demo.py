"""`exsync demo`: the whole system on one machine, seeded, on embedded defaults.

Starts Redis (REDIS_URL if set, else a `redis-server` on PATH, else fakeredis' in-process TCP
server), the Graph and Coconut emulators with a few staff, appointments and Outlook events, the
web app, one worker and the scheduler, all wired to each other; prints where each listens, and
stops everything on Ctrl-C.

Every process gets the `EXSYNC_*` settings the user set (a shorter safety net, say), except the
ones the demo wires itself (where Redis, Graph and Coconut are, their credentials, the keys);
`Settings` checks them before anything starts. The same settings go to `exsync.env` in the work
folder, and the banner prints the line that loads them into another shell, so `exsync status`
and every other command reach this demo. That file beats the CLI looking for a running demo on
its own: nothing in a production CLI changes with a file it happens to find, and the commands
that call Graph or Coconut need the emulators' addresses, CA and the demo's key, not only Redis.
The work folder (logs, Redis' AOF, the emulator's CA, `exsync.env`) is removed on exit unless
`--keep` is given, or something failed and its logs are wanted.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path

import click
import httpx
import redis
from cryptography.fernet import Fernet

from core import jobs
from core.admin_accounts import add_user
from core.job_kinds import JobKind
from core.settings import ENV_PREFIX, SettingsError, load_settings
from exsync.processes import Process, ProcessExited, wait_until

TENANT = "8c3f5a52-6b0e-4c1f-9a57-2f1d0c5e7b10"
GRAPH_APP = ("exsync-demo-app", "exsync-demo-secret")
COCONUT_APP = ("exsync-demo", "coconut-demo-secret")
ADMIN_EMAIL = "admin@demo.example"
# The Graph emulator's mailbox to sign in as at Authorize (not a Coconut staff member).
SERVICE_ACCOUNT = "sync@contoso.example"
ENV_FILE = "exsync.env"
# Graph's own cadence, which the emulator keeps off unless asked (tests time themselves):
# several change notifications in one POST, and reauthorizationRequired for every subscription
# each hour (docs/emulators.md).
GRAPH_CADENCE = [
    {"kind": "notification_batch", "window": 1.0, "size": 50},
    {"kind": "reauthorization_required", "every": 3600},
]
# The demo's own choices a user's setting overrides (the rest of the wiring it never gives up).
DEMO_DEFAULTS = {"EXSYNC_SHOW_EVENT_TITLES": "true"}


def run_demo(host: str, port: int, keep: bool = False) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="exsync-demo-"))
    fate = "kept on exit" if keep else "removed on exit; --keep keeps it"
    click.echo(f"exsync demo: work folder {workdir} ({fate})")
    code = _run(workdir, host, port)
    if keep or code == 1:  # 1: a process failed, and its log is in there
        click.echo(f"exsync demo: kept its work folder {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
        click.echo(f"exsync demo: removed its work folder {workdir}")
    return code


def _run(workdir: Path, host: str, port: int) -> int:
    graph_port, coconut_port = _free(host, port + 1), _free(host, port + 2)
    web_url = f"http://{host}:{port}"
    graph_url = f"https://{host}:{graph_port}"
    coconut_url = f"http://{host}:{coconut_port}"
    children: list[Process] = []
    stopping = threading.Event()

    def stop(*_: object) -> None:
        stopping.set()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        redis_url, redis_note = _redis(workdir, host, _free(host, port + 3), children)
        env, passed, ignored = _environment(redis_url, web_url, graph_url, coconut_url, workdir)
        _write_env_file(workdir / ENV_FILE, env)
        python = sys.executable

        def spawn(name: str, *argv: str) -> Process:
            proc = Process(name, list(argv), env, workdir / f"{name}.log").start()
            children.append(proc)
            return proc

        graph = spawn(
            "graph-emulator", python, "-m", "emulators.graph", "--host", host,
            "--port", str(graph_port), "--ca-file", str(workdir / "graph-ca.pem"), "--users", "3",
            "--service-account", SERVICE_ACCOUNT,
        )  # fmt: skip
        coconut = spawn(
            "coconut-emulator", python, "-m", "emulators.coconut", "--host", host,
            "--port", str(coconut_port), "--staff", "3",
            "--webhook-url", f"{web_url}/webhooks/coconut",
            "--webhook-secret", env["EXSYNC_COCONUT_WEBHOOK_SECRET"],
        )  # fmt: skip
        graph.wait_for_line(r"graph emulator ready at \S+")
        coconut.wait_for_line(r"coconut emulator ready at \S+")
        _graph_cadence(graph_url, workdir / "graph-ca.pem")
        spawn("web", python, "-m", "exsync.cli", "web", "--host", host, "--port", str(port))
        wait_until(lambda: _answers(f"{web_url}/healthz"), 30, what="the web app")
        spawn("worker", python, "-m", "exsync.cli", "worker", "--host", host, "--port", "0")
        spawn("scheduler", python, "-m", "exsync.cli", "scheduler", "--host", host, "--port", "0")
    except SettingsError as exc:
        click.echo(f"exsync demo: {exc}", err=True)
        _stop_all(children)
        return 2
    except (ProcessExited, TimeoutError, OSError) as exc:
        click.echo(f"exsync demo: could not start: {exc}", err=True)
        _stop_all(children)
        return 1

    admin_password = secrets.token_urlsafe(12)
    conn = redis.Redis.from_url(redis_url)
    add_user(conn, ADMIN_EMAIL, admin_password)
    # The demo's Graph app comes from the environment, already consented: sync what exists now,
    # as Authorize does on a real connection.
    queue = jobs.queue(env.get("EXSYNC_QUEUE_NAME", "exsync"), conn)
    jobs.ensure_queued(queue, JobKind.INITIAL_SYNC, "exchange")
    _print_started(redis_note, web_url, graph_url, coconut_url, workdir)
    _print_next_steps(web_url, graph_url, workdir, admin_password, passed, ignored)
    click.echo("Press Ctrl-C to stop.")
    code = _watch(children, stopping)
    _stop_all(children)
    click.echo("exsync demo: stopped everything")
    return code


def _environment(
    redis_url: str, web_url: str, graph_url: str, coconut_url: str, workdir: Path
) -> tuple[dict[str, str], list[str], list[str]]:
    """Every child's environment; with the user's EXSYNC_* settings passed on, and those the
    demo's wiring overrides. Raises SettingsError when a passed-on setting is invalid."""
    wiring = {
        "EXSYNC_REDIS_URL": redis_url,
        "EXSYNC_PUBLIC_URL": web_url,
        "EXSYNC_TENANT_ID": TENANT,
        "EXSYNC_CLIENT_ID": GRAPH_APP[0],
        "EXSYNC_CLIENT_SECRET": GRAPH_APP[1],
        "EXSYNC_GRAPH_URL": f"{graph_url}/v1.0",
        "EXSYNC_AUTHORITY": graph_url,
        "EXSYNC_GRAPH_CA_FILE": str(workdir / "graph-ca.pem"),
        "EXSYNC_COCONUT_URL": f"{coconut_url}/api/v2/b2b",
        "EXSYNC_COCONUT_CLIENT_ID": COCONUT_APP[0],
        "EXSYNC_COCONUT_CLIENT_SECRET": COCONUT_APP[1],
        # Fresh secrets each run, as production needs: a published one would be anyone's.
        "EXSYNC_COCONUT_WEBHOOK_SECRET": secrets.token_urlsafe(32),
        # The admin pages' "worldwide" cloud is the Graph emulator here.
        "EXSYNC_CLOUD_OVERRIDE_GRAPH_URL": f"{graph_url}/v1.0",
        "EXSYNC_CLOUD_OVERRIDE_AUTHORITY": graph_url,
        "EXSYNC_SECRET_KEY": Fernet.generate_key().decode(),
    }
    users = {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}
    passed = {k: v for k, v in users.items() if k not in wiring}
    ignored = sorted(k for k in users if k in wiring)
    settings = {**DEMO_DEFAULTS, **passed, **wiring}
    fields = {k[len(ENV_PREFIX) :].lower(): v for k, v in settings.items()}
    fields.pop("redis_url")  # read through its aliases only; a URL needs no checking here
    load_settings(**fields)
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    env.update(settings, PYTHONUNBUFFERED="1")
    return env, sorted(passed), ignored


def _write_env_file(path: Path, env: dict[str, str]) -> None:
    """The demo's settings as a shell file: `. FILE` in another shell reaches this demo."""
    lines = [f"# exsync demo: load with  . {path}"]
    lines += [
        f"export {k}={shlex.quote(v)}" for k, v in sorted(env.items()) if k.startswith(ENV_PREFIX)
    ]
    path.touch(mode=0o600)  # it holds the demo's secret key
    path.write_text("\n".join(lines) + "\n")


def _redis(workdir: Path, host: str, port: int, children: list[Process]) -> tuple[str, str]:
    """The Redis to use and a line saying which one it is."""
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"], "REDIS_URL from the environment"
    server = shutil.which("redis-server")
    if server:
        proc = Process(
            "redis",
            [server, "--bind", host, "--port", str(port), "--dir", str(workdir),
             "--appendonly", "yes", "--save", ""],
            dict(os.environ), workdir / "redis.log",
        ).start()  # fmt: skip
        children.append(proc)
        proc.wait_for_line(r"Ready to accept connections")
        return f"redis://{host}:{port}/0", f"redis-server on {host}:{port} (AOF in {workdir})"
    from fakeredis import TcpFakeServer

    fake = TcpFakeServer((host, port), server_type="redis")
    fake.RequestHandlerClass = _error_replies_keep_the_connection()
    fake.daemon_threads = True  # its connection threads must not keep the demo alive at exit
    threading.Thread(target=fake.serve_forever, daemon=True, name="fakeredis").start()
    return f"redis://{host}:{port}/0", f"embedded fakeredis on {host}:{port} (in memory)"


def _error_replies_keep_the_connection() -> type:
    """fakeredis' TCP handler closes the connection when a command answers with an error it
    raises instead of returning (NOSCRIPT, which redis-py expects before it loads a script), so
    every RQ and lock script failed on the embedded server. Returning the error keeps it a
    normal error reply."""
    from fakeredis._clients._tcp_server import TCPFakeRequestHandler

    class Handler(TCPFakeRequestHandler):
        def setup(self) -> None:
            super().setup()
            read = self.current_client.read_response

            def read_response(*args: object, **kwargs: object) -> object:
                try:
                    return read(*args, **kwargs)
                except redis.ResponseError as exc:
                    return exc

            self.current_client.read_response = read_response  # type: ignore[method-assign]

    return Handler


def _free(host: str, preferred: int) -> int:
    """The port next to the web port when it is free (easy to remember), else any free one."""
    for candidate in (preferred, 0):
        with socket.socket() as sock:
            try:
                sock.bind((host, candidate))
            except OSError:
                continue
            return int(sock.getsockname()[1])
    raise OSError(f"no free port on {host}")


def _graph_cadence(graph_url: str, ca_file: Path) -> None:
    for spec in GRAPH_CADENCE:
        armed = httpx.post(f"{graph_url}/_emulator/faults", json=spec, verify=str(ca_file),
                           timeout=5)  # fmt: skip
        armed.raise_for_status()


def _answers(url: str, **kwargs: object) -> bool:
    with contextlib.suppress(httpx.HTTPError):
        return httpx.get(url, timeout=1, **kwargs).status_code == 200  # type: ignore[arg-type]
    return False


def _print_started(
    redis_note: str, web_url: str, graph_url: str, coconut_url: str, workdir: Path
) -> None:
    rows = [
        ("redis", redis_note),
        ("graph emulator", f"{graph_url}/v1.0  (state: {graph_url}/_emulator/state)"),
        ("coconut emulator", f"{coconut_url}/api/v2/b2b  (state: {coconut_url}/_emulator/state)"),
        ("web", f"{web_url}  (webhooks at /webhooks/graph and /webhooks/coconut)"),
        ("worker", "1 RQ worker"),
        ("scheduler", "subscriptions, polling and reconciliation"),
        ("logs", str(workdir)),
    ]
    click.echo("exsync demo is running:")
    for name, where in rows:
        click.echo(f"  {name:<17} {where}")


def _print_next_steps(
    web_url: str, graph_url: str, workdir: Path, admin_password: str, passed: list[str],
    ignored: list[str],
) -> None:  # fmt: skip
    ca_file = workdir / "graph-ca.pem"
    rows = [
        ("exsync commands", f". {workdir / ENV_FILE}   (paste in another shell, then e.g. "
                            "exsync status)"),
        ("admin sign-in", f"{web_url}/admin  as {ADMIN_EMAIL} / {admin_password}"),
        ("authorize", f"Configuration tab: tenant {TENANT}, client {GRAPH_APP[0]} / "
                      f"{GRAPH_APP[1]}, service account {SERVICE_ACCOUNT}"),
        ("certificate", f"Authorize opens the Graph emulator's sign-in at {graph_url}: the "
                        "browser warns about its certificate (from the emulator's own CA, "
                        f"{ca_file}); continue past the warning, or trust that file: "
                        "docs/demo.md"),
    ]  # fmt: skip
    if passed:
        rows.append(("your settings", ", ".join(passed) + " (passed to every process)"))
    if ignored:
        rows.append(("not used", ", ".join(ignored) + " (the demo wires its own)"))
    for name, what in rows:
        click.echo(f"  {name:<17} {what}")


def _watch(children: list[Process], stopping: threading.Event) -> int:
    while not stopping.wait(0.5):
        for proc in children:
            if not proc.running:
                click.echo(f"exsync demo: {proc.name} exited; its log: {proc.log_path}", err=True)
                return 1
    return 0


def _stop_all(children: list[Process]) -> None:
    for proc in reversed(children):
        proc.stop()
    time.sleep(0.1)
