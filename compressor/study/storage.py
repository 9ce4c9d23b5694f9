"""Where studies live: Optuna storages (SQLite by default, any SQLAlchemy URL), with heartbeats.

One rule for the default: the study of an experiment is ``runs/<name>/search.db`` (its run
folder), and a study named on the command line without ``--storage`` is looked for there.
"""

from __future__ import annotations

import contextlib
import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
from sqlalchemy.engine import make_url

from compressor.errors import ConfigError, MissingStorageError, RunFailedError, first_line

__all__ = ["default_storage_url", "find_storage_url", "open_storage", "load_study", "sqlite_path", "check_lasting", "writes_to", "redact",
           "stored_attrs",
           "RUNS"]

#: the folder that holds each experiment's run folder (``runs/<name>``)
RUNS = Path("runs")


def default_storage_url(run_path: str | Path | None = None, *, study: str | None = None) -> str:
    """``sqlite:///<run_path>/search.db``: the study file next to the experiment's other results.

    With ``study`` instead of a run folder: that of the experiment the study is named after
    (``runs/<study>``), where ``compressor search`` put it.

    Example:
        >>> default_storage_url(study="quickstart")
        'sqlite:///runs/quickstart/search.db'
    """
    if run_path is None:
        if study is None:
            raise TypeError("default_storage_url needs a run folder or a study name")
        run_path = RUNS / study
    return f"sqlite:///{Path(run_path) / 'search.db'}"


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///`` URL as SQLAlchemy opens it (a query string such as
    ``?timeout=30`` left out, %-escapes read); None for other storages or an in-memory database."""
    prefix = "sqlite:///"
    if not url.startswith(prefix) or url == prefix or url.endswith(":memory:"):
        return None
    try:
        database = make_url(url).database
    except Exception:  # noqa: BLE001 - SQLAlchemy's own parse errors: the text as it is
        database = url[len(prefix):]
    return Path(database) if database and database != ":memory:" else None


def check_lasting(url: str) -> str:
    """``url``, refused if it is an in-memory database (``sqlite://``, ``sqlite:///:memory:``, ``mode=memory``).

    A study must outlive the process that writes it: the search's results are read later by
    ``report``, ``confirm`` and ``worker``, and even within the process Optuna's heartbeat
    thread opens its own connection, which would see another, empty, database.

    Raises:
        ConfigError: the URL names an in-memory database.

    Example:
        >>> check_lasting("sqlite:///runs/quickstart/search.db")
        'sqlite:///runs/quickstart/search.db'
    """
    try:
        parsed = make_url(url)
    except Exception:  # noqa: BLE001 - not a URL at all: open_storage says so when it tries it
        return url
    database = parsed.database or ""
    if parsed.get_backend_name() == "sqlite" and (
        database in ("", ":memory:") or database.startswith("file::memory:") or parsed.query.get("mode") == "memory"
    ):
        raise ConfigError(
            f"storage {redact(url)} is an in-memory database, lost when the process ends; a study must outlive it: "
            "give a file (sqlite:///PATH/search.db) or a database server's URL"
        )
    return url


def find_storage_url(study: str, root: str | Path = RUNS) -> str:
    """Where the study named ``study`` is kept, for a command given no ``--storage``: the search's
    default for a study named so (``runs/<study>/search.db``) if the study is there, else the one
    ``search.db`` under ``root`` (up to three folders deep) that holds a study of that name, as a
    search with ``search.study`` or ``run_dir`` set puts it; else the default (whose absence the
    command then reports).

    Raises:
        ConfigError: several files hold a study of that name (``--storage`` must say which).
    """
    default = Path(root) / study / "search.db"
    if _holds(default, study):
        return f"sqlite:///{default}"
    seen = {default.resolve()}
    found = []
    for path in sorted(path for depth in ("*", "*/*", "*/*/*") for path in Path(root).glob(f"{depth}/search.db")):
        if path.resolve() not in seen and _holds(path, study):  # a symlinked folder is the same file, once
            found.append(path)
        seen.add(path.resolve())
    if len(found) > 1:
        raise ConfigError(f"study {study!r} is in {len(found)} storages ({', '.join(map(str, found))}): "
                          "give --storage sqlite:///PATH")
    return f"sqlite:///{found[0] if found else default}"


def _holds(path: Path, study: str) -> bool:
    """Whether the SQLite file at ``path`` has an Optuna study named ``study`` (read-only, nothing created)."""
    if not path.is_file():
        return False
    try:
        # as a URI, escaped (a '#' or '%' in a folder name), read-only: nothing is created or changed
        uri = f"{path.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True, timeout=5)) as connection:
            return connection.execute("SELECT 1 FROM studies WHERE study_name = ?", (study,)).fetchone() is not None
    except sqlite3.Error:  # not an Optuna database, locked, unreadable: not where the study is
        return False


def open_storage(
    url: str, *, heartbeat_interval: int | None = None, grace_period: int | None = None, max_retry: int = 0,
    create: bool = True,
) -> RDBStorage:
    """An Optuna ``RDBStorage`` on ``url``.

    With a heartbeat interval, a trial whose worker stops beating for ``grace_period``
    seconds is marked failed when any worker next starts a trial, and retried up to
    ``max_retry`` times with the same choices.

    Raises:
        ConfigError: the URL cannot be opened (the message names it) or is an in-memory
            database (:func:`check_lasting`), or, with ``create=False``, a SQLite file that
            does not exist.
    """
    path = sqlite_path(check_lasting(url))
    if path is not None:
        if not create and not path.exists():
            raise MissingStorageError(f"no study storage at {path} (file not found)")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as error:  # a file where a folder of the path should be; no permission
            blocker = next((folder for folder in (path.parent, *path.parent.parents)
                            if folder.exists() and not folder.is_dir()), None)
            why = f"{blocker} is a file, not a folder" if blocker else error.strerror or first_line(error)
            raise ConfigError(f"cannot open storage {redact(url)}: cannot make the folder {path.parent}: {why}") from None
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna since 2.8
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            callback = RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if heartbeat_interval and max_retry else None
            return RDBStorage(
                url,
                engine_kwargs={"connect_args": {"timeout": 60}} if path is not None else None,
                heartbeat_interval=heartbeat_interval,
                grace_period=grace_period,
                heartbeat_stale_trial_callback=callback,
            )
    except Exception as error:  # SQLAlchemy: bad URL, missing driver, server down
        reason = first_line(error)
        raise ConfigError(f"cannot open storage {redact(url)}: {reason}") from None


def load_study(url: str, name: str, **storage_options) -> optuna.Study:
    """The existing study ``name`` in ``url``.

    Raises:
        ConfigError: no such storage or study (the message lists the studies there).
    """
    storage = open_storage(url, create=False, **storage_options)
    names = sorted(optuna.get_all_study_names(storage))
    if name not in names:
        there = ", ".join(names) if names else "none"
        raise ConfigError(f"no study {name!r} in {redact(url)} (studies there: {there})")
    return optuna.load_study(study_name=name, storage=storage)


def stored_attrs(url: str, name: str) -> dict[str, Any] | None:
    """The user attributes of study ``name`` in ``url`` when a search made it; None when there is
    no such study yet (or one ``compressor search`` did not make). Creates nothing: a SQLite file is
    looked into read-only first, and one without the study is no study."""
    from compressor.study.records import FORMAT

    path = sqlite_path(check_lasting(url))
    if path is not None and not _holds(path, name):  # read-only: a missing or foreign file is no study
        return None
    storage = open_storage(url, create=False)
    if name not in optuna.get_all_study_names(storage):
        return None
    attrs = optuna.load_study(study_name=name, storage=storage).user_attrs
    return dict(attrs) if attrs.get("compressor_format") == FORMAT else None


@contextlib.contextmanager
def writes_to(url: str) -> Iterator[None]:
    """Work that writes the study in ``url``: when the storage stops taking writes (a read-only
    file or folder, a full disk), one :class:`RunFailedError` naming it and why, not Optuna's
    ``StorageInternalError`` with SQLAlchemy's traceback."""
    try:
        yield
    except optuna.exceptions.StorageInternalError as error:
        cause = error.__cause__ or error.__context__ or error
        reason = first_line(getattr(cause, "orig", None) or cause)  # the driver's words, without SQLAlchemy's SQL
        raise RunFailedError(f"cannot write the study in {redact(url)}: {reason}") from None


def redact(url: str) -> str:
    """The URL with its password (if any) masked, for messages and pages.

    Example:
        >>> redact("postgresql://search:secret@db:5432/studies")
        'postgresql://search:***@db:5432/studies'
    """
    scheme, sep, rest = url.partition("://")
    credentials, at, host = rest.rpartition("@")
    if not at or ":" not in credentials:
        return url
    user = credentials.split(":", 1)[0]
    return f"{scheme}{sep}{user}:***@{host}"
