"""The ``admin dump`` and ``admin restore`` commands (ops/dump.py, ops/restore.py).

Each prints one JSON object at the end, as every admin command does, and shows its
progress on stderr while it runs when stderr is a terminal. A flag that cannot work (a
dump directory that exists, a dump to restore that does not) is refused by the parser
before anything is read or written: exit code 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import AppError
from ..settings import Settings
from ..store.client import UNREACHABLE, Mongo
from .dump import dump
from .dumpfiles import Progress
from .restore import restore

COMMANDS = ("dump", "restore")

Command = Callable[[str, str], argparse.ArgumentParser]


class StoreUnreachable(AppError):
    status, code = 503, "STORE_UNREACHABLE"


def add_commands(command: Command) -> None:
    """Add the commands through cli.py's ``command(name, help)``."""
    p = command("dump", "write a consistent copy of the whole database to a new directory")
    p.add_argument(
        "--out",
        required=True,
        type=_new_directory,
        metavar="DIR",
        help="the dump's directory: must not exist yet (its parent must)",
    )
    p = command("restore", "load a dump into an empty database, checked against its manifest")
    p.add_argument(
        "--from",
        dest="source",
        required=True,
        type=_existing_directory,
        metavar="DIR",
        help="a directory written by admin dump",
    )
    p.add_argument(
        "--force",
        action="store_true",
        help="replace what a database that is not empty holds (it is dropped first)",
    )


def _new_directory(text: str) -> Path:
    path = Path(text)
    if not text.strip() or path.name in ("", ".", ".."):
        raise argparse.ArgumentTypeError(f"{text!r} does not name a new directory")
    if path.exists() or path.is_symlink():
        raise argparse.ArgumentTypeError(
            f"{text} already exists: a dump is written to a new directory, never over one"
        )
    if not path.absolute().parent.is_dir():
        raise argparse.ArgumentTypeError(f"{path.absolute().parent} is not a directory")
    return path.absolute()


def _existing_directory(text: str) -> Path:
    path = Path(text)
    if not text.strip() or not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not a directory")
    return path.absolute()


async def run_backup_command(args: argparse.Namespace, settings: Settings) -> dict[str, Any]:
    mongo = Mongo.from_settings(settings)
    progress = Progress()
    try:
        try:
            await mongo.connect()
        except UNREACHABLE as exc:
            raise StoreUnreachable(f"The store did not answer: {exc}") from None
        if args.admin_command == "dump":
            return await dump(mongo, args.out, progress)
        if args.admin_command == "restore":
            return await restore(
                mongo, args.source, force=args.force, progress=progress, settings=settings
            )
        raise AssertionError(args.admin_command)
    finally:
        await mongo.close()
