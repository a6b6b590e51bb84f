"""Which database a `radar` command works on: said on stderr, and a SQLite file that is not
there refused when its path depends on the directory the command runs from.

The default, `sqlite:///./var/radar.db`, is relative: `radar keys create` run from another
directory would otherwise create a new, empty database there and put the key in it, and
the service would answer 401 to it with nothing to say why.
"""

from __future__ import annotations

from pathlib import Path

import click
from sqlalchemy.engine import make_url

from app.kit.settings import Settings


def database_name(url: str) -> str:
    """The database as people read it and can set it again: no driver, no password, and
    a SQLite file by its absolute path."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = sqlite_file(url)
        return "sqlite:///" + str(path) if path is not None else "sqlite:///:memory:"
    parsed = parsed.set(drivername=parsed.get_backend_name())
    return parsed.render_as_string(hide_password=True)


def sqlite_file(url: str) -> Path | None:
    """The absolute path of a SQLite URL's file (None: in memory, or not SQLite)."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    if parsed.database.startswith(":memory:") or parsed.database.startswith("file::memory:"):
        return None
    return Path(parsed.database).absolute()


_opened: list[str] = []  # the database this process's command opened, for its error line


def open_database(settings: Settings, *, creates: bool = False) -> str:
    """The database a command is about to open, by name; unless the command `creates` it
    (migrate, serve), a SQLite file that does not exist yet at a path relative to the
    current directory is refused. An absolute path names the file wherever the command
    runs: it is created (and migrated) as asked. A command says the name on stderr when it
    is done (`say_database`), or when it starts if it runs until stopped; an error line
    names it too (`opened_database`)."""
    if not creates:
        _refuse_a_missing_relative_file(settings.database_url)
    name = database_name(settings.database_url)
    _opened[:] = [name]
    return name


def opened_database() -> str | None:
    return _opened[0] if _opened else None


def say_database() -> None:
    """`database: ...` on stderr (never stdout: a command's output stays its own)."""
    if _opened:
        click.echo(f"database: {_opened[0]}", err=True)


def _refuse_a_missing_relative_file(url: str) -> None:
    parsed = make_url(url)
    path = sqlite_file(url)
    if path is None or path.exists() or Path(parsed.database or "").is_absolute():
        return
    raise click.ClickException(
        f"no database at {path} ({parsed.database} is relative to the current directory): "
        f"run this where the service runs, or set RADAR_DATABASE_URL to the service's "
        "database by its absolute path (RADAR_DATABASE_URL=sqlite:////srv/radar/var/radar.db); "
        "`radar migrate` creates a new one here"
    )
