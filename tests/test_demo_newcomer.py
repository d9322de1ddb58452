"""The demo as a newcomer drives it (issue 16): `exsync` commands reach it from another shell,
CLI chores use the connection the admin stored instead of asking for environment variables,
the Graph emulator names the service account to sign in as, the wrong-account page keeps the
authorization code out of the address bar, the user's EXSYNC_* settings reach every process,
the work folder goes away unless kept, and "Days back" has one default everywhere."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
import redis
from playwright.sync_api import Page, expect, sync_playwright

from core import connection, store
from core.connection import SYNC_PAST_DAYS, Connection
from core.secrets import SecretBox, generate_key
from core.settings import load_settings
from exsync.processes import Process
from tests.cli_support import run
from tests.graph_emulator_support import Emulator
from tests.harness import GRAPH_CLIENT_ID, GRAPH_CLIENT_SECRET, TENANT, free_port
from tests.test_admin_support import Browser, make_accounts, make_app

SERVICE_ACCOUNT = "sync@contoso.example"
README = Path(__file__).parent.parent / "README.md"


def clean_env(**settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EXSYNC_")}
    env.pop("REDIS_URL", None)
    return {**env, "PYTHONUNBUFFERED": "1", **settings}


# -- the emulators' usage -----------------------------------------------------------------------


@pytest.mark.parametrize("service", ["graph", "coconut"])
def test_emulate_help_shows_the_exsync_command(service: str) -> None:
    done = run(clean_env(), "emulate", service, "--help")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Usage: exsync emulate {service} [OPTIONS]")
    assert "python -m" not in done.stdout


# -- one default for "Days back" ---------------------------------------------------------------


def test_days_back_starts_from_the_same_default_as_exsync_sync_past_days(
    redis_url: str, redis_conn: redis.Redis
) -> None:
    default = load_settings().sync_past_days
    assert default == SYNC_PAST_DAYS
    make_accounts(redis_conn)
    browser = Browser(make_app(redis_url))
    browser.sign_in()
    page = browser.get("/admin/exchange").get_data(as_text=True)
    field = re.search(r'<input[^>]*id="sync_past_days"[^>]*>', page)
    assert field is not None, page
    assert f'value="{default}"' in field.group(0)
    row = next(
        line for line in README.read_text().splitlines() if "`EXSYNC_SYNC_PAST_DAYS`" in line
    )
    assert f"| `{default}` / " in row and "Days back" in row


# -- the Graph emulator's service account -------------------------------------------------------


@pytest.fixture
def graph(tmp_path: Path) -> Iterator[Emulator]:
    emulator = Emulator(tmp_path, ["--users", "2", "--service-account", SERVICE_ACCOUNT]).start()
    yield emulator
    emulator.stop()


def test_the_sign_in_page_names_the_service_account_and_signs_it_in(graph: Emulator) -> None:
    query = {
        "client_id": GRAPH_CLIENT_ID,
        "response_type": "code",
        "state": "s1",
        "redirect_uri": "http://127.0.0.1:9/admin/exchange/callback",
        "scope": "openid",
    }
    authorize = f"/{TENANT}/oauth2/v2.0/authorize"
    with graph.http() as http:
        page = http.get(authorize, params=query).text
        assert f'<strong id="service-account">{SERVICE_ACCOUNT}</strong>' in page
        buttons = re.findall(
            r'<button name="user_id" value="([^"]+)"[^>]*>[^<]*&lt;([^&]+)&gt;', page
        )
        assert buttons[0][1] == SERVICE_ACCOUNT  # listed first
        # The other mailboxes stay listed: the wrong-account refusal can still be tried.
        assert {"user1@contoso.example", "user2@contoso.example"} <= {m for _, m in buttons}
        picked = http.post(authorize, data={**query, "user_id": buttons[0][0]})
        assert picked.status_code == 302
        code = parse_qs(urlsplit(picked.headers["location"]).query)["code"][0]
        token = http.post(
            f"/{TENANT}/oauth2/v2.0/token",
            data={"grant_type": "authorization_code", "code": code,
                  "redirect_uri": query["redirect_uri"], "client_id": GRAPH_CLIENT_ID,
                  "client_secret": GRAPH_CLIENT_SECRET},
        )  # fmt: skip
    assert token.status_code == 200, token.text
    shares = graph.state()["shares"]
    account = next(u["id"] for u in graph.state()["users"] if u["mail"] == SERVICE_ACCOUNT)
    assert sorted(s["role"] for s in shares if s["delegate"] == account) == ["write", "write"]


# -- CLI chores read the stored connection ------------------------------------------------------


def store_connection(conn: redis.Redis, graph: Emulator, key: str) -> None:
    """What Save and Authorize leave in Redis: the configuration, connected."""
    box = SecretBox(key)
    config = Connection(
        tenant_id=TENANT, graph_url=f"{graph.base}/v1.0", authority=graph.base,
        client_id=GRAPH_CLIENT_ID, service_account=SERVICE_ACCOUNT,
    )  # fmt: skip
    connection.save_configuration(conn, box, config, GRAPH_CLIENT_SECRET)
    connection.mark_connected(conn, box, "refresh-token-not-used-app-only", SERVICE_ACCOUNT)


def test_subscriptions_delete_uses_the_stored_connection_without_graph_variables(
    graph: Emulator, redis_url: str, redis_conn: redis.Redis
) -> None:
    key = generate_key()
    store_connection(redis_conn, graph, key)
    # A record of ours Graph no longer has: deleting it asks Graph (404) with a real token.
    redis_conn.hset(store.subscription_key("sub-1"), mapping={"user_id": "u1", "expires_at": 1})
    env = clean_env(EXSYNC_REDIS_URL=redis_url, EXSYNC_SECRET_KEY=key,
                    EXSYNC_GRAPH_CA_FILE=str(graph.ca_file))  # fmt: skip
    done = run(env, "subscriptions", "delete", "sub-1")
    assert (done.returncode, done.stdout) == (0, "deleted sub-1\n"), done.stderr
    assert not redis_conn.exists(store.subscription_key("sub-1"))
    requests = graph.control("GET", "/summary").json()["counters"]["requests"]
    assert requests == {"DELETE /v1.0/subscriptions/<sub_id>": 1}


def test_missing_settings_are_named_with_where_to_set_them(
    graph: Emulator, redis_url: str, redis_conn: redis.Redis
) -> None:
    env = clean_env(EXSYNC_REDIS_URL=redis_url)
    nothing = run(env, "subscriptions", "delete", "--all")
    assert nothing.returncode == 2
    assert "EXSYNC_TENANT_ID, EXSYNC_CLIENT_ID and EXSYNC_CLIENT_SECRET" in nothing.stderr
    assert "Configuration" in nothing.stderr
    assert "EXSYNC_COCONUT_URL" not in nothing.stderr  # delete never calls Coconut

    key = generate_key()
    store_connection(redis_conn, graph, key)
    no_key = run(env, "subscriptions", "renew", "--all")
    assert no_key.returncode == 2
    assert "EXSYNC_SECRET_KEY" in no_key.stderr and "EXSYNC_TENANT_ID" not in no_key.stderr

    env.update(EXSYNC_SECRET_KEY=key, EXSYNC_GRAPH_CA_FILE=str(graph.ca_file))
    no_coconut = run(env, "subscriptions", "create", "--all")
    assert no_coconut.returncode == 2
    assert no_coconut.stderr.startswith(
        "exsync: this command calls Coconut: set EXSYNC_COCONUT_URL"
    )
    assert "EXSYNC_TENANT_ID" not in no_coconut.stderr
    assert run(env, "subscriptions", "delete", "--all").returncode == 0


# -- the demo itself ------------------------------------------------------------------------------


def start_demo(tmp_path: Path, *args: str, **settings: str) -> tuple[Process, int, Path]:
    port = free_port()
    demo = Process(
        "demo", [sys.executable, "-m", "exsync.cli", "demo", "--port", str(port), *args],
        clean_env(**settings), tmp_path / "demo.log",
    ).start()  # fmt: skip
    workdir = Path(demo.wait_for_line(r"work folder (\S+)").group(1))
    demo.wait_for_line(r"Press Ctrl-C to stop", timeout=90)
    return demo, port, workdir


def stop_demo(demo: Process) -> str:
    demo.signal(signal.SIGINT)
    assert demo.popen is not None
    assert demo.popen.wait(60) == 0, demo.log()
    return demo.log()


def children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def command(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()


def environment(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def test_a_newcomer_drives_the_demo(tmp_path: Path) -> None:
    if shutil.which("redis-server") is None or shutil.which("chromium") is None:
        pytest.fail("this test needs redis-server and Debian's chromium (.ci/ensure-chromium)")
    demo, port, workdir = start_demo(
        tmp_path, EXSYNC_SAFETY_NET_SECONDS="45", EXSYNC_REDIS_URL="redis://127.0.0.1:1/0"
    )
    try:
        banner = demo.log()
        assert f"work folder {workdir} (removed on exit; --keep keeps it)" in banner
        assert "EXSYNC_SAFETY_NET_SECONDS (passed to every process)" in banner
        assert "EXSYNC_REDIS_URL (the demo wires its own)" in banner
        assert f"browser warns about its certificate (from the emulator's own CA, {workdir}/" \
               "graph-ca.pem)" in banner  # fmt: skip

        # Every process of ours runs with the user's setting, and the demo's Redis.
        assert demo.popen is not None
        ours = [pid for pid in children(demo.popen.pid) if "redis-server" not in command(pid)]
        assert len(ours) == 5, [command(pid) for pid in ours]  # emulators, web, worker, scheduler
        redis_url = re.search(r"redis-server on (\S+)", banner).group(1)  # type: ignore[union-attr]
        for pid in ours:
            env = environment(pid)
            assert env["EXSYNC_SAFETY_NET_SECONDS"] == "45", command(pid)
            assert env["EXSYNC_REDIS_URL"] == f"redis://{redis_url}/0", command(pid)

        # The line the banner prints points a command in another shell at the demo.
        paste = re.search(r"exsync commands\s+(\. \S+)", banner)
        assert paste is not None, banner
        cli = f"{paste.group(1)} && {sys.executable} -m exsync.cli status"
        shell = subprocess.run(["bash", "-c", cli], env=clean_env(), capture_output=True,
                               text=True, timeout=60, check=False)  # fmt: skip
        assert "initial sync:" in shell.stdout, shell.stderr

        password = re.search(r"as admin@demo\.example / (\S+)", banner).group(1)  # type: ignore[union-attr]
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=shutil.which("chromium"), args=["--no-sandbox"]
            )
            try:
                context = browser.new_context(ignore_https_errors=True)
                authorize_in_the_browser(context.new_page(), f"http://127.0.0.1:{port}", password)
            finally:
                browser.close()
    finally:
        log = stop_demo(demo)
    assert f"removed its work folder {workdir}" in log
    assert not workdir.exists()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def authorize_in_the_browser(page: Page, web_url: str, password: str) -> None:
    """Configure with the banner's values; the wrong account is refused without the code left
    in the address bar; the service account named on the sign-in page connects."""
    page.goto(f"{web_url}/admin")
    page.fill("#email", "admin@demo.example")
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.fill("#tenant_id", TENANT)
    page.select_option("#cloud", "worldwide")
    page.check("#confirm_endpoints")
    page.fill("#display_name", "Demo Outlook")
    page.fill("#client_id", GRAPH_CLIENT_ID)
    page.fill("#client_secret", GRAPH_CLIENT_SECRET)
    page.fill("#service_account", SERVICE_ACCOUNT)
    page.click("form.card button.primary")

    page.click("#authorize")
    expect(page.locator("#service-account")).to_have_text(SERVICE_ACCOUNT)
    page.click("button[name=user_id]:has-text('user1@contoso.example')")
    expect(page.locator("main")).to_contain_text("user1@contoso.example")
    expect(page.locator("main")).to_contain_text(SERVICE_ACCOUNT)
    assert urlsplit(page.url).query == "", page.url

    page.goto(f"{web_url}/admin/exchange")
    page.click("#authorize")
    page.click(f"button[name=user_id]:has-text('{SERVICE_ACCOUNT}')")
    expect(page.locator("main")).to_contain_text(f"Connected as {SERVICE_ACCOUNT}")


def test_keep_leaves_the_work_folder(tmp_path: Path) -> None:
    python_dir = str(Path(sys.executable).parent)  # no redis-server: the embedded Redis
    demo, _, workdir = start_demo(tmp_path, "--keep", PATH=python_dir)
    try:
        assert f"work folder {workdir} (kept on exit)" in demo.log()
        assert (workdir / "exsync.env").stat().st_mode & 0o077 == 0  # it holds the secret key
    finally:
        log = stop_demo(demo)
    try:
        assert f"kept its work folder {workdir}" in log
        assert (workdir / "graph-emulator.log").exists()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def test_an_invalid_setting_stops_the_demo_before_it_starts_anything(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "exsync.cli", "demo", "--port", str(free_port())],
        env=clean_env(EXSYNC_SAFETY_NET_SECONDS="soon"), capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stdout + done.stderr
    assert "EXSYNC_SAFETY_NET_SECONDS" in done.stderr
    workdir = Path(re.search(r"work folder (\S+)", done.stdout).group(1))  # type: ignore[union-attr]
    assert not workdir.exists()
