"""The files of a dump (``admin dump``, ``admin restore``) and progress on a terminal.

A dump is a directory, readable only by its owner (it holds every lead, the API keys'
digests and the webhook endpoints' signing secrets):

- ``<collection>.jsonl`` per collection: one document per line, MongoDB Extended JSON
  in canonical mode (``store/extjson.py``), so every BSON type survives the trip (dates,
  64-bit integers, doubles, binary), as ``mongoexport`` writes it;
- ``manifest.json``, written last: for each collection its file, its number of
  documents and the SHA-256 of the file's bytes, beside what the dump was taken from.

A dump is written into a hidden directory beside its destination and renamed to it
once complete, so a directory with the destination's name is always a whole dump.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from ..errors import AppError
from ..store.extjson import encode

FORMAT = "pollybot-leads-dump"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
SUFFIX = ".jsonl"
# Collection names a dump holds (and a restore accepts): no path can be made of one.
COLLECTION_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,119}\Z")
CHUNK = 1 << 20


class DumpDamaged(AppError):
    status, code = 400, "DUMP_DAMAGED"


def private_dir(path: Path) -> None:
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)  # whatever the umask


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CollectionFile:
    """One collection's file being written: its count and checksum as it grows, and a
    mark to go back to (a snapshot read that is taken again rewrites its part)."""

    def __init__(self, directory: Path, collection: str) -> None:
        self.collection = collection
        self.name = collection + SUFFIX
        fd = os.open(directory / self.name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        self._file: IO[bytes] = os.fdopen(fd, "wb")
        self._hash = hashlib.sha256()
        self.count = 0
        self.size = 0

    def write(self, docs: list[dict[str, Any]]) -> None:
        data = b"".join(encode(doc) for doc in docs)
        self._file.write(data)
        self._hash.update(data)
        self.count += len(docs)
        self.size += len(data)

    def mark(self) -> tuple[int, int, Any]:
        return self.count, self.size, self._hash.copy()

    def rewind(self, mark: tuple[int, int, Any]) -> None:
        self.count, self.size, checksum = mark
        self._hash = checksum.copy()
        self._file.flush()
        self._file.seek(self.size)
        self._file.truncate()

    def close(self) -> dict[str, Any]:
        """Flush it to the disk; its manifest entry."""
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        return {"file": self.name, "count": self.count, "sha256": self._hash.hexdigest()}

    def discard(self) -> None:
        """Close it, written or not (the dump failed: its directory goes)."""
        if not self._file.closed:
            self._file.close()


@dataclass(frozen=True)
class Entry:
    collection: str
    path: Path
    count: int
    sha256: str


def read_manifest(directory: Path) -> tuple[dict[str, Any], list[Entry]]:
    """The manifest and its entries; DumpDamaged when it is missing or malformed."""
    try:
        manifest = json.loads((directory / MANIFEST).read_text())
    except FileNotFoundError:
        raise DumpDamaged(f"{directory} has no {MANIFEST}: not a complete dump") from None
    except (OSError, ValueError) as exc:
        raise DumpDamaged(f"{directory / MANIFEST} cannot be read: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise DumpDamaged(f"{directory / MANIFEST} is not a {FORMAT} manifest")
    if manifest.get("version") != FORMAT_VERSION:
        raise DumpDamaged(
            f"{directory} is a dump of format version {manifest.get('version')!r}; "
            f"this version reads {FORMAT_VERSION}"
        )
    collections = manifest.get("collections")
    if not isinstance(collections, dict):
        raise DumpDamaged(f"{directory / MANIFEST} lists no collections")
    entries = []
    for name, entry in sorted(collections.items()):
        if (
            not COLLECTION_NAME.match(name)
            or not isinstance(entry, dict)
            or entry.get("file") != name + SUFFIX
            or not isinstance(entry.get("count"), int)
            or not isinstance(entry.get("sha256"), str)
        ):
            raise DumpDamaged(f"{directory / MANIFEST}: a malformed entry for {name!r}")
        entries.append(Entry(name, directory / entry["file"], entry["count"], entry["sha256"]))
    return manifest, entries


def verify(entry: Entry, progress: Progress) -> None:
    """The file is there, with the manifest's checksum and number of documents."""
    checksum, lines, done = hashlib.sha256(), 0, 0
    try:
        size = entry.path.stat().st_size
        with entry.path.open("rb") as file:
            while chunk := file.read(CHUNK):
                checksum.update(chunk)
                lines += chunk.count(b"\n")
                done += len(chunk)
                progress.show(f"verifying {entry.collection}", done, size)
    except FileNotFoundError:
        raise DumpDamaged(f"{entry.path.name} is missing") from None
    except OSError as exc:
        raise DumpDamaged(f"{entry.path.name} cannot be read: {exc}") from None
    if checksum.hexdigest() != entry.sha256:
        raise DumpDamaged(f"{entry.path.name} does not match its checksum in the manifest")
    if lines != entry.count:
        raise DumpDamaged(
            f"{entry.path.name} holds {lines} documents, the manifest says {entry.count}"
        )


class Progress:
    """A line on stderr redrawn in place, at most every ``interval`` seconds: only when
    stderr is a terminal (never in a log or a pipe)."""

    def __init__(self, stream: IO[str] | None = None, interval: float = 0.2) -> None:
        self._stream = stream or sys.stderr
        self.enabled = self._stream.isatty()
        self._interval = interval
        self._shown = 0.0
        self._width = 0

    def show(self, what: str, done: int, total: int | None = None, *, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._shown < self._interval:
            return
        self._shown = now
        text = f"{what}: {done:,}"
        if total:
            text += f" of {total:,} ({min(done / total, 1.0):.0%})"
        self._stream.write("\r" + text.ljust(self._width))
        self._width = len(text)
        self._stream.flush()

    def done(self, what: str) -> None:
        if not self.enabled:
            return
        self._stream.write("\r" + what.ljust(self._width) + "\n")
        self._width = 0
        self._shown = 0.0
        self._stream.flush()
