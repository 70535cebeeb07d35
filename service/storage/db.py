"""The service database: one SQLite file in WAL mode, one connection per thread.

WAL lets the many readers (API handlers, SSE streams) proceed while the single writer commits;
``busy_timeout`` makes writers queue instead of failing. Plain ``sqlite3``: five small tables.

The schema is versioned with ``PRAGMA user_version`` (:data:`SCHEMA_VERSION`). Version 2 stores each
job as a typed msgspec document with its model, dataset and circuit ids as columns; version 3 adds the
running job's last progress event (``progress_event``, a :class:`~neurflow.progress.ProgressEvent`):
a version-2 file gets the column on open, and its rows without one still read (their ``stage``,
``done`` and ``total`` columns, as they were written). A version-1 file
(jobs as hand-built JSON) is migrated on open: its job table is kept, unread, as ``jobs_v1`` and a
new one is made; keys, models, datasets and circuits carry over unchanged, and jobs still queued in
the old table are not run (they are counted in the log). A file from a newer version is refused.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

log = logging.getLogger("neurflow.service")

SCHEMA_VERSION = 3

SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    hash TEXT PRIMARY KEY,          -- sha256 of the key; the key itself is never stored
    owner TEXT NOT NULL,            -- the id every object of this key is filed under
    name TEXT NOT NULL,
    created_at REAL NOT NULL,
    revoked INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS models (
    owner TEXT NOT NULL,
    id TEXT NOT NULL,               -- sha256 of the weights file
    descriptor TEXT NOT NULL,       -- JSON: arch, num_classes, input_size, mean, std, class_names
    layers TEXT NOT NULL,           -- JSON: [[name, shape], ...]
    size INTEGER NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (owner, id)
);
CREATE TABLE IF NOT EXISTS datasets (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    name TEXT NOT NULL,
    n_images INTEGER NOT NULL,
    classes TEXT NOT NULL,          -- JSON: folder names (empty for a flat zip)
    size INTEGER NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    kind TEXT NOT NULL,             -- run | relabel | debug | evaluate (the job's tag)
    state TEXT NOT NULL,            -- queued | running | succeeded | failed | cancelled
    priority INTEGER NOT NULL DEFAULT 0,
    stage TEXT NOT NULL DEFAULT '',
    done INTEGER NOT NULL DEFAULT 0,
    total INTEGER NOT NULL DEFAULT 0,
    progress_event BLOB,            -- msgspec JSON of the last neurflow.progress.ProgressEvent; NULL when none
    error TEXT,
    job BLOB NOT NULL,              -- msgspec JSON of the typed job (service.jobs.types.Job)
    model_id TEXT,                  -- the model the job loads, if any
    dataset_id TEXT,                -- the dataset whose images it reads, if any
    circuit_id TEXT,                -- the circuit it works on (relabel, debug, evaluate)
    result TEXT,                    -- JSON: circuit ids, debug or evaluation result
    attempt INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 2,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    worker TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, priority, created_at);
CREATE INDEX IF NOT EXISTS jobs_owner ON jobs (owner, created_at);
CREATE INDEX IF NOT EXISTS jobs_model ON jobs (model_id, state);
CREATE INDEX IF NOT EXISTS jobs_dataset ON jobs (dataset_id, state);
CREATE TABLE IF NOT EXISTS circuits (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    job_id TEXT NOT NULL,
    class_index INTEGER NOT NULL,
    parent TEXT,                    -- the circuit this one was relabeled from
    key TEXT NOT NULL,              -- artifact-store folder holding circuit.json and patches/
    model_id TEXT NOT NULL,
    dataset_id TEXT NOT NULL,
    summary TEXT NOT NULL,          -- JSON: layers, groups, labeled
    created_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS circuits_owner ON circuits (owner, created_at);
"""


OUR_TABLES = ("api_keys", "models", "datasets", "jobs", "circuits")


class DatabaseRefused(ValueError):
    """The file at the database path is not one this NeurFlow can use (said in one line at start-up)."""


class Database:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        try:
            conn = self.conn()
            self._refuse_foreign(conn)  # before WAL mode, which would change the file
            conn.execute("PRAGMA journal_mode=WAL")
            self._migrate(conn)
        except sqlite3.DatabaseError as exc:
            self.close()
            raise DatabaseRefused(f"the database {self.path} is damaged or not a SQLite file ({exc}); restore it "
                                  "from a backup or use another --data-dir") from None

    def _refuse_foreign(self, conn: sqlite3.Connection) -> None:
        """Another program's SQLite file is never migrated into (and so changed)."""
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        if tables and not tables & set(OUR_TABLES):
            self.close()
            raise DatabaseRefused(f"the database {self.path} belongs to another program (tables: "
                                  f"{', '.join(sorted(tables)[:5])}); use another --data-dir")

    def _migrate(self, conn: sqlite3.Connection) -> None:
        if conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")  # read again under the write lock: another process may have migrated
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            conn.execute("ROLLBACK")
            raise DatabaseRefused(f"the database {self.path} has schema version {version}, newer than this NeurFlow "
                               f"(version {SCHEMA_VERSION}); upgrade NeurFlow or use another --data-dir")
        if version < SCHEMA_VERSION:
            try:
                old = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='jobs'").fetchone()
                if old is not None and version < 2:
                    pending = conn.execute("SELECT COUNT(*) FROM jobs WHERE state IN ('queued','running')").fetchone()[0]
                    conn.execute("DROP INDEX IF EXISTS jobs_state")
                    conn.execute("DROP INDEX IF EXISTS jobs_owner")
                    conn.execute("ALTER TABLE jobs RENAME TO jobs_v1")
                    log.warning("database %s: migrated to schema %d; the old job table is kept as jobs_v1 and its %d "
                                "unfinished job(s) will not run (submit them again)", self.path, SCHEMA_VERSION, pending)
                elif old is not None and version == 2:
                    conn.execute("ALTER TABLE jobs ADD COLUMN progress_event BLOB")
                for statement in _statements(SCHEMA):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        conn.execute("COMMIT")

    def conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=True)
            conn.row_factory = sqlite3.Row
            conn.execute("PRAGMA busy_timeout=30000")
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA foreign_keys=ON")
            self._local.conn = conn
        return conn

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``: takes the write lock up front)."""
        conn = self.conn()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        else:
            conn.execute("COMMIT")

    def one(self, sql: str, params: tuple[Any, ...] = ()) -> sqlite3.Row | None:
        return self.conn().execute(sql, params).fetchone()

    def all(self, sql: str, params: tuple[Any, ...] = ()) -> list[sqlite3.Row]:
        return self.conn().execute(sql, params).fetchall()

    def ping(self) -> bool:
        try:
            return self.one("SELECT 1") is not None
        except sqlite3.Error:
            return False

    def close(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None


def _statements(script: str) -> list[str]:
    """The statements of a script, one by one (``executescript`` would commit our transaction)."""
    out, buf = [], ""
    for line in script.splitlines(keepends=True):
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf)
            buf = ""
    return out


def now() -> float:
    return time.time()
