"""Where the SQL lives: the four folders `migrate` reads.

A source root is a directory holding the four subfolders named in ``SQL_FOLDERS``.
``sql_root()`` resolves it, in this order:

1. an explicit ``source`` directory (``eventlive db migrate --source DIR``, tests);
2. ``shim/_sql`` inside the installed package (the wheel ships the SQL there, see
   ``[tool.hatch.build.targets.wheel.force-include]`` in pyproject.toml);
3. the repository root, parent of the ``shim`` package (source checkout, editable install).

Raises ``SourceNotFoundError`` when the chosen directory lacks one of the four subfolders.
"""

from __future__ import annotations

from pathlib import Path

SQL_FOLDERS: tuple[str, ...] = ("sql", "functions", "policies", "indexes")

# The ``shim`` package (this file is shim/migrate/paths.py).
_PACKAGE_DIR = Path(__file__).resolve().parent.parent


class SourceNotFoundError(FileNotFoundError):
    """No directory with the four SQL subfolders where one was expected."""


def is_source_root(path: Path) -> bool:
    """True when ``path`` holds all four SQL subfolders."""
    return all((path / folder).is_dir() for folder in SQL_FOLDERS)


def sql_root(source: Path | None = None) -> Path:
    """The directory holding ``sql/``, ``functions/``, ``policies/``, ``indexes/``.

    An explicit ``source`` wins and must be complete; otherwise the package data, then the
    repository root. The result is an absolute path.
    """
    if source is not None:
        root = Path(source).resolve()
        if not is_source_root(root):
            missing = [f for f in SQL_FOLDERS if not (root / f).is_dir()]
            raise SourceNotFoundError(
                f"{root} is not an eventlive SQL source: missing {', '.join(missing)}/"
            )
        return root
    for candidate in (_PACKAGE_DIR / "_sql", _PACKAGE_DIR.parent):
        if is_source_root(candidate):
            return candidate
    raise SourceNotFoundError(
        f"no SQL found: neither {_PACKAGE_DIR / '_sql'} (installed package) nor "
        f"{_PACKAGE_DIR.parent} (source checkout) holds {', '.join(SQL_FOLDERS)}/; "
        "pass --source DIR"
    )
