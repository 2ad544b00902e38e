"""The history file: where it is, its schema, opening it, the text it holds, and what
its errors mean for the writer."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote

BUSY_TIMEOUT_MS = 10_000  # another kernel's transaction is short; waiting beats failing
LIVE_STATES = ("CREATED", "RUNNING", "IDLE")
SQLITE_MAGIC = b"SQLite format 3\x00"  # the first bytes of every SQLite database file

SCHEMA = [
    # version 1
    """
    CREATE TABLE sessions (
        id TEXT PRIMARY KEY, pid INTEGER, pid_start INTEGER, host TEXT, started_at REAL
    );
    CREATE TABLE tasks (
        id TEXT PRIMARY KEY, session TEXT, name TEXT, command TEXT, argv INTEGER,
        cwd TEXT, env TEXT, created_at REAL, started_at REAL, ended_at REAL,
        state TEXT, returncode INTEGER, reason TEXT, error TEXT,
        pid INTEGER, pid_start INTEGER, grace REAL
    );
    CREATE INDEX tasks_created ON tasks (created_at);
    CREATE INDEX tasks_state ON tasks (state);
    CREATE TABLE transitions (
        task TEXT, event TEXT, source TEXT, target TEXT, time REAL, reason TEXT
    );
    CREATE INDEX transitions_task ON transitions (task);
    CREATE TABLE chunks (
        task TEXT, seq INTEGER, stream TEXT, time REAL, data BLOB, PRIMARY KEY (task, seq)
    );
    """,
    # version 2: what redaction took from the task's env and command, as JSON
    # ({"env": [names], "command": true}); NULL in rows written by version 1
    """
    ALTER TABLE tasks ADD COLUMN redacted TEXT;
    """,
    # version 3: the runner each task ran on, and the host (or worker) its processes
    # were on; rows from before ran on this package's only runner then, on the host
    # of their kernel
    """
    ALTER TABLE tasks ADD COLUMN runner TEXT;
    ALTER TABLE tasks ADD COLUMN host TEXT;
    UPDATE tasks SET runner = 'local',
        host = (SELECT sessions.host FROM sessions WHERE sessions.id = tasks.session);
    """,
    # version 4: whether the task ran in a terminal (its input, stream 'stdin', is then
    # echoed in its output), how it ran beyond its command, as JSON ({"pty": true,
    # "cols": 120, "stdin": false, "agent": "auto", "retries": 2, ...}: what a rerun
    # gives it again), and an agent CLI's summary as JSON (NULL for other tasks)
    """
    ALTER TABLE tasks ADD COLUMN pty INTEGER;
    ALTER TABLE tasks ADD COLUMN terminal TEXT;
    ALTER TABLE tasks ADD COLUMN agent TEXT;
    """,
    # version 5, for batches that run themselves: each attempt of a retried task as JSON
    # ([{"number": 1, "returncode": 1, "reason": "exit", ...}]), the ids of the tasks it
    # ran after (JSON), and what it cost: its group's CPU seconds and peak RSS
    """
    ALTER TABLE tasks ADD COLUMN attempts TEXT;
    ALTER TABLE tasks ADD COLUMN after TEXT;
    ALTER TABLE tasks ADD COLUMN cpu_seconds REAL;
    ALTER TABLE tasks ADD COLUMN peak_rss INTEGER;
    """,
]

# What a failed write means (primary SQLite result codes). Transient: wait and write
# again (busy, locked, out of memory, read-only, I/O error, disk full, cannot open).
# Record: this one row cannot be stored (too big, constraint, type); the others can.
# Anything else (corrupt, not a database, no such table): the file is not ours to use.
_TRANSIENT_CODES = frozenset({5, 6, 7, 8, 10, 13, 14, 15})
_RECORD_CODES = frozenset({18, 19, 20, 25})
_TRANSIENT_WORDS = ("locked", "busy", "disk is full", "disk i/o", "unable to open", "readonly")

# At load, these last: permission denied (3), read-only (8), cannot open (14), auth (23).
_CANNOT_OPEN_CODES = frozenset({3, 8, 14, 23})
_PASSING_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EAGAIN, errno.EINTR})

FaultKind = Literal["transient", "record", "fatal"]


class StoreError(RuntimeError):
    """Raised when the history database cannot be opened or read, or was written by a
    newer version."""


def default_path() -> str:
    """ONESHOT_NB_DB if set, else history.sqlite3 in the user's data directory."""
    if os.environ.get("ONESHOT_NB_DB"):
        return os.environ["ONESHOT_NB_DB"]
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(
        os.path.expanduser("~"), ".local", "share"
    )
    return os.path.join(base, "oneshot_nb", "history.sqlite3")


def connect(path: str, busy_timeout_ms: int | None = None) -> sqlite3.Connection:
    """Open (creating with mode 0600) and migrate the database at `path`."""
    busy = BUSY_TIMEOUT_MS if busy_timeout_ms is None else busy_timeout_ms
    if path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        # Create the file ourselves so it is private from the first byte. O_EXCL: a file
        # that exists is never opened and closed here (see DatabaseFile for why).
        with contextlib.suppress(FileExistsError):
            os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o600))
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=busy / 1000)
    try:
        db.execute(f"PRAGMA busy_timeout = {busy}")
        # Large pages store a log's blobs in fewer, larger writes (a third faster than
        # the 4 KiB default, measured); it takes effect only when the file is created.
        db.execute("PRAGMA page_size = 65536")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")
        db.execute("PRAGMA wal_autocheckpoint = 0")  # see writer.CHECKPOINT_QUIET
        migrate(db)
    except BaseException:
        db.close()
        raise
    return db


def migrate(db: sqlite3.Connection) -> None:
    db.execute("BEGIN IMMEDIATE")
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > len(SCHEMA):
            raise StoreError(
                f"history database is at schema version {version}, newer than this "
                f"oneshot_nb knows ({len(SCHEMA)}); upgrade oneshot_nb or use another file"
            )
        for number in range(version, len(SCHEMA)):
            for statement in filter(str.strip, SCHEMA[number].split(";")):
                db.execute(statement)
            db.execute(f"PRAGMA user_version = {number + 1}")
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


def to_sql(text: str | None) -> str | bytes | None:
    """A string as the database can hold it. sqlite3 binds str as strict UTF-8, so a
    string with surrogate escapes (a file name that is not UTF-8, as os.listdir gives
    it) is stored as a BLOB of the bytes os.fsencode would give: nothing is lost."""
    if text is None or text.isascii():
        return text
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # backslashreplace: a lone surrogate no file name can hold (a broken str from
        # elsewhere) is kept visible rather than refused.
        return text.encode("utf-8", "surrogateescape" if _escaped(text) else "backslashreplace")
    return text


def from_sql(value: str | bytes | None) -> str | None:
    """The string `to_sql` was given."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "surrogateescape")
    return value


def _escaped(text: str) -> bool:
    return all("\udc80" <= char <= "\udcff" for char in text if "\ud800" <= char <= "\udfff")


def fault_kind(exc: BaseException) -> FaultKind:
    """Whether a failed write is worth retrying, costs one record, or ends history."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        if code is not None:
            code &= 0xFF  # the primary code of an extended one
            if code in _TRANSIENT_CODES:
                return "transient"
            return "record" if code in _RECORD_CODES else "fatal"
        if isinstance(exc, (sqlite3.InterfaceError, sqlite3.ProgrammingError)):
            return "record"  # a value sqlite3 could not bind
        text = str(exc).lower()
        return "transient" if any(word in text for word in _TRANSIENT_WORDS) else "fatal"
    if isinstance(exc, (ValueError, TypeError, OverflowError)):  # UnicodeError included
        return "record"
    return "transient" if isinstance(exc, OSError) else "fatal"


def lasting_at_load(exc: BaseException) -> bool:
    """Whether a fault met when the extension loads turns history off: a file that is
    not a database or of a newer schema, one we may not open, a directory we cannot
    make. Anything else (a lock, a full disk) pauses history, as it would mid-run."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in _CANNOT_OPEN_CODES:
            return True
        text = str(exc).lower()
        return fault_kind(exc) != "transient" or "unable to open" in text or "readonly" in text
    if isinstance(exc, OSError):
        return exc.errno not in _PASSING_ERRNOS
    return True


def describe(exc: BaseException) -> str:
    """An error as one line of a message: our own errors speak for themselves."""
    return str(exc) if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"


FileIdentity = tuple[int, int]


def identify(path: str) -> FileIdentity:
    """The file at `path` (device and inode), to tell it from one put in its place."""
    st = os.stat(path)
    return st.st_dev, st.st_ino


class DatabaseFile:
    """The database file a connection of ours has open: which file it is, whether it is
    still at its path, and whether it still holds a database.

    Closing any descriptor of a file drops every POSIX lock this process holds on it,
    SQLite's included: another process closing its connection next takes itself for the
    last one and deletes the -wal and -shm ours still uses (lost commits, a corrupt
    file: https://sqlite.org/howtocorrupt.html, 2.2). So the file is never opened and
    closed to be checked: its identity comes from os.stat, its header from os.pread on
    one descriptor per file for the whole process, opened before the first connection
    and closed after the last (`close` once the connection is closed).
    Opened before the connection, it creates the file (private from the first byte) and
    refuses one that is not a database: SQLite would take the pages an old -wal beside
    it holds for the database, and copy them into the file when it closes.
    Readers in this process check the header through it too (`overwritten`).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._open = True
        Path(path).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with _held_lock:
            self.identity = _hold(path)
        if not self.is_database(empty=True):
            self.close()  # its last user: no connection of ours to it
            raise sqlite3.DatabaseError("file is not a database")

    def status(self) -> Literal["same", "gone", "replaced", "garbage"]:
        """Whether the file at `path` is still this one: deleted, replaced by another
        file, or overwritten in place by something not a database."""
        try:
            if identify(self.path) != self.identity:
                return "replaced"
        except FileNotFoundError:
            return "gone"
        return "same" if self.is_database() else "garbage"

    def is_database(self, empty: bool = False) -> bool:
        """Whether the file starts as every SQLite database does (True once closed);
        with `empty`, an empty file (a database not made yet) counts as one."""
        with _held_lock:  # a pread never meets a descriptor closed (or reused) meanwhile
            held = _held.get(self.identity)
            if not self._open or held is None:
                return True
            head = os.pread(held.fds[0], len(SQLITE_MAGIC), 0)
        return head == SQLITE_MAGIC or (empty and not head)

    def close(self) -> None:
        """Only once the connection is closed: see the class."""
        with _held_lock:
            if not self._open:
                return
            self._open = False
            held = _held[self.identity]
            held.users -= 1
            if held.users == 0:
                del _held[self.identity]
                for fd in held.fds:
                    os.close(fd)


@dataclass
class _Held:
    """The descriptors of one file that this process holds, and how many use them."""

    fds: list[int]
    users: int = 0


# The files our writers hold open, by identity: all share one descriptor of a file, and
# a reader checks the header there.
_held: dict[FileIdentity, _Held] = {}
_held_lock = threading.Lock()


def _hold(path: str) -> FileIdentity:
    """Take (open, or share) a descriptor of the file at `path`; under _held_lock."""
    with contextlib.suppress(FileNotFoundError):
        identity = identify(path)
        if identity in _held:
            _held[identity].users += 1
            return identity
    fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    st = os.fstat(fd)
    identity = (st.st_dev, st.st_ino)
    held = _held.setdefault(identity, _Held([]))
    held.fds.append(fd)  # a second one only if the file changed under us: kept all the same
    held.users += 1
    return identity


def close_without_checkpoint(db: sqlite3.Connection, path: str) -> None:
    """Close `db` without copying its -wal into the file at `path`, which holds the
    user's bytes now, not a database. Python's sqlite3 before 3.12 cannot ask for that
    (SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE), but SQLite copies only when closing the last
    connection, and a read-only connection never does: one is held meanwhile. The -wal
    and -shm are left as they are."""
    guard = None
    try:
        guard = sqlite3.connect(uri(path, "ro"), uri=True)
        guard.execute("PRAGMA schema_version")  # holds the file from here on
    except sqlite3.Error:
        pass  # the page it read was not a database's: it holds the file all the same
    try:
        db.close()
    finally:
        if guard is not None:
            guard.close()


def uri(path: str, mode: str) -> str:
    """The URI of the file at `path`: quoted, as "#", "?" and "%" would name another
    file, and quoted as bytes, as a path that is not UTF-8 names what os.fsencode gives."""
    return f"file:{quote(os.fsencode(path))}?mode={mode}"


def overwritten(path: str) -> bool:
    """Whether `path` is a file a writer of this process holds and that is not a
    database any more (overwritten in place). SQLite would go on reading the pages
    left in the old -wal, as if nothing had happened."""
    try:
        identity = identify(path)
    except OSError:
        return False
    with _held_lock:
        held = _held.get(identity)
        head = None if held is None else os.pread(held.fds[0], len(SQLITE_MAGIC), 0)
    return head is not None and head != SQLITE_MAGIC


SIDECARS = ("-wal", "-shm")  # the files SQLite keeps beside a database in WAL mode


def sidecars(path: str) -> dict[str, FileIdentity]:
    """The -wal and -shm files of the database at `path`, as they are now."""
    found = {}
    for suffix in SIDECARS:
        with contextlib.suppress(FileNotFoundError):
            found[suffix] = identify(path + suffix)
    return found


@contextlib.contextmanager
def creating(path: str, ours: dict[str, FileIdentity]) -> Iterator[None]:
    """Hold while opening the database at `path` again, after the file we wrote to was
    deleted or replaced: kernels of this host take turns, so none deletes the files
    another has just made.

    The old file's -wal and -shm stay behind (SQLite keeps them for a file deleted
    while open), and whatever opens the path next would take them for its own: reading
    our old pages over a new file. So they go first: those that are `ours`, and any
    while no file is at `path` (nobody may use them then).
    """
    parent = Path(path).parent
    parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(parent, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        missing = not os.path.exists(path)
        for suffix, now in sidecars(path).items():
            if missing or ours.get(suffix) == now:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path + suffix)
        yield
    finally:
        os.close(fd)  # releases the lock
