"""The files migrate applies, read from a source root (see ``shim.migrate.paths``).

Order of application, and what each kind means:

1. ``sql/NNNN_name.sql`` -- versioned: applied once each, by ascending number;
2. ``functions/*.sql``, 3. ``policies/*.sql``, 4. ``indexes/*.sql`` -- repeatable:
   (re)applied when new or changed, by file name inside each folder.

Only ``*.sql`` files directly inside each folder count; other files are ignored. A file's
checksum is the sha256 of its UTF-8 text with line endings normalised to ``\\n`` (so a
checkout with CRLF line endings is not drift).

A versioned file may be revised after it shipped only to make it safe where it was not
(never to change what it built where it worked): it then names each earlier text it
replaces in a line ``-- eventlive: revises sha256 <hex>``. A database that applied one of
those earlier texts is not drift: migrate records the revision without running the file
again, and a later versioned file brings such databases to the same state.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from shim.migrate.errors import SourceError
from shim.migrate.paths import SQL_FOLDERS, SourceNotFoundError, sql_root
from shim.migrate.split import split_statements

VERSIONED = "sql"
NON_TRANSACTIONAL = "indexes"
_VERSIONED_NAME = re.compile(r"^(\d{4,})_[A-Za-z0-9_.-]+\.sql$")
_REVISES = re.compile(r"^-- eventlive: revises sha256 ([0-9a-f]{64})\s*$", re.MULTILINE)


@dataclass(frozen=True)
class SourceFile:
    """One SQL file: ``kind`` is its folder name, ``name`` its file name."""

    kind: str
    name: str
    text: str
    checksum: str

    @property
    def label(self) -> str:
        """``kind/name``, how messages and history refer to the file."""
        return f"{self.kind}/{self.name}"

    @property
    def versioned(self) -> bool:
        return self.kind == VERSIONED

    @property
    def transactional(self) -> bool:
        """False for ``indexes/``: they run statement by statement in autocommit."""
        return self.kind != NON_TRANSACTIONAL

    @property
    def version(self) -> int:
        """The ``NNNN`` number of a versioned file (0 for repeatable files)."""
        match = _VERSIONED_NAME.match(self.name)
        return int(match.group(1)) if match else 0

    @property
    def revises(self) -> frozenset[str]:
        """Checksums of the earlier texts this versioned file replaces (module docstring)."""
        return frozenset(_REVISES.findall(self.text)) if self.versioned else frozenset()


@dataclass(frozen=True)
class Source:
    """All files of a source root, in application order."""

    root: Path
    files: tuple[SourceFile, ...]

    def find(self, name: str) -> SourceFile | None:
        """The file called ``name`` (``0002_x.sql`` or ``sql/0002_x.sql``), if any."""
        for f in self.files:
            if name in (f.name, f.label):
                return f
        return None


def checksum(text: str) -> str:
    """sha256 hex digest of ``text`` as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def load_source(source: Path | None = None) -> Source:
    """Read every file of the source root; raises ``SourceError`` on an unusable source."""
    try:
        root = sql_root(source)
    except SourceNotFoundError as exc:
        raise SourceError(str(exc)) from exc
    files: list[SourceFile] = []
    for kind in SQL_FOLDERS:
        paths = sorted(p for p in (root / kind).glob("*.sql") if p.is_file())
        folder = [_read(kind, p) for p in paths]
        if kind == VERSIONED:
            folder = _ordered_versions(folder)
        files.extend(folder)
    return Source(root, tuple(files))


def _read(kind: str, path: Path) -> SourceFile:
    try:
        text = path.read_text(encoding="utf-8")  # universal newlines: CRLF becomes \n
    except UnicodeDecodeError as exc:
        raise SourceError(f"{kind}/{path.name} is not valid UTF-8: {exc}") from exc
    if kind == NON_TRANSACTIONAL:
        try:  # these run statement by statement: they must split cleanly
            split_statements(text)
        except ValueError as exc:
            raise SourceError(f"{kind}/{path.name}: {exc}") from exc
    return SourceFile(kind, path.name, text, checksum(text))


def _ordered_versions(files: list[SourceFile]) -> list[SourceFile]:
    seen: dict[int, str] = {}
    for f in files:
        if not _VERSIONED_NAME.match(f.name):
            raise SourceError(
                f"{f.label}: a versioned migration must be named NNNN_name.sql "
                "(digits, underscore, letters, digits, '_', '-', '.')"
            )
        if f.version in seen:
            raise SourceError(f"{f.label} and sql/{seen[f.version]} share version {f.version}")
        seen[f.version] = f.name
    return sorted(files, key=lambda f: f.version)
