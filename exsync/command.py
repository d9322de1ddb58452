"""What every exsync command shares: its exit codes and how it reads the settings.

Exit codes scripts can rely on: 0 done, 1 the chore ran and found a problem, 2 bad usage or
configuration (the message names the setting), 3 Redis is unreachable.
"""

from __future__ import annotations

import sys

import click

from core import jobs, logs
from core.settings import Settings, SettingsError, load_settings

EXIT_PROBLEM = 1
EXIT_CONFIG = 2
EXIT_UNREACHABLE = 3
SETTINGS_META = "exsync.settings"  # the settings a command loaded, for the group's messages


def command_settings(*required: str) -> Settings:
    """The settings, with these required; a problem exits 2 naming the variable. Configures the
    process's logs and job policy, and keeps the settings for the group's messages."""
    try:
        settings = load_settings().require(*required)
    except SettingsError as exc:
        click.echo(f"exsync: {exc} (set in the environment; README, Configuration)", err=True)
        sys.exit(EXIT_CONFIG)
    logs.configure(settings.log_level, settings.log_format)
    jobs.configure(settings.job_retries, settings.job_timeout)
    click.get_current_context().meta[SETTINGS_META] = settings
    return settings
