"""`--setting EXSYNC_NAME=VALUE` for the benchmarks that start the whole system, so a trade-off
(the coalescing settle, say) is measured both ways on the same machine."""

from __future__ import annotations

import argparse


def add_setting_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--setting", action="append", default=[], type=lambda kv: tuple(kv.split("=", 1)),
        metavar="EXSYNC_NAME=VALUE", help="a setting for every process (repeatable)",
    )  # fmt: skip
