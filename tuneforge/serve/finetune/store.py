"""Files, jobs and job events in one SQLite database (``<state>/finetune.db``).

SQLite, not JSON files: a job's status and its events change from the manager thread while requests read
them, and a server killed at any moment must come back with every acknowledged upload and job. Jobs are
stored as their OpenAI JSON object (``body``) plus the few fields the server needs for itself
(``spec``: the checked request; ``attempts``: worker starts). One connection, one lock: the traffic is a
handful of small writes per training step at most.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

DB_NAME = "finetune.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY, created_at INTEGER NOT NULL, seq INTEGER NOT NULL, status TEXT NOT NULL,
    body TEXT NOT NULL, spec TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT UNIQUE NOT NULL, job_id TEXT NOT NULL, body TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS events_job ON events (job_id, seq);
"""


class Store:
    def __init__(self, folder: Path) -> None:
        self._db = sqlite3.connect(folder / DB_NAME, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        self._lock = threading.Lock()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def _rows(self, sql: str, *args: Any) -> list[tuple]:
        with self._lock:
            return self._db.execute(sql, args).fetchall()

    def _write(self, sql: str, *args: Any) -> None:
        with self._lock:
            self._db.execute(sql, args)

    # -- files -----------------------------------------------------------------------------------

    def add_file(self, body: dict[str, Any]) -> None:
        self._write("INSERT INTO files (id, created_at, body) VALUES (?, ?, ?)", body["id"], body["created_at"],
                    json.dumps(body))

    def file(self, file_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT body FROM files WHERE id = ?", file_id)
        return json.loads(rows[0][0]) if rows else None

    def files(self) -> list[dict[str, Any]]:
        return [json.loads(r[0]) for r in self._rows("SELECT body FROM files ORDER BY created_at DESC, rowid DESC")]

    def delete_file(self, file_id: str) -> None:
        self._write("DELETE FROM files WHERE id = ?", file_id)

    # -- jobs ------------------------------------------------------------------------------------

    def add_job(self, body: dict[str, Any], spec: dict[str, Any]) -> None:
        with self._lock:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM jobs").fetchone()[0]
            self._db.execute("INSERT INTO jobs (id, created_at, seq, status, body, spec) VALUES (?, ?, ?, ?, ?, ?)",
                             (body["id"], body["created_at"], seq, body["status"], json.dumps(body), json.dumps(spec)))

    def job(self, job_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT body FROM jobs WHERE id = ?", job_id)
        return json.loads(rows[0][0]) if rows else None

    def spec(self, job_id: str) -> dict[str, Any]:
        return json.loads(self._rows("SELECT spec FROM jobs WHERE id = ?", job_id)[0][0])

    def update_job(self, job_id: str, **changes: Any) -> dict[str, Any]:
        """Change fields of a job's OpenAI object (atomically with respect to other updates)."""
        with self._lock:
            body = json.loads(self._db.execute("SELECT body FROM jobs WHERE id = ?", (job_id,)).fetchone()[0])
            body.update(changes)
            self._db.execute("UPDATE jobs SET body = ?, status = ? WHERE id = ?", (json.dumps(body), body["status"], job_id))
            return body

    def count_attempt(self, job_id: str) -> int:
        with self._lock:
            self._db.execute("UPDATE jobs SET attempts = attempts + 1 WHERE id = ?", (job_id,))
            return self._db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()[0]

    def jobs(self, after: str | None = None, limit: int | None = None, status: tuple[str, ...] = (),
             metadata: dict[str, str] | None = None) -> list[dict[str, Any]]:
        """Newest first; ``after``: only jobs older than that job (the OpenAI cursor); ``metadata``: only
        jobs whose metadata has every one of these pairs ({} : only jobs without metadata). Filtered in
        SQL, before the limit, so pages stay full."""
        sql, args = "SELECT body FROM jobs WHERE 1 = 1", []
        if after is not None:
            sql += " AND seq < COALESCE((SELECT seq FROM jobs WHERE id = ?), 0)"
            args.append(after)
        if metadata == {}:
            sql += " AND COALESCE(json_type(body, '$.metadata'), 'null') = 'null'"
        for key, value in (metadata or {}).items():
            sql += (" AND EXISTS (SELECT 1 FROM json_each(jobs.body, '$.metadata') AS m"
                    " WHERE m.key = ? AND m.type = 'text' AND m.value = ?)")
            args.extend((key, value))
        if status:
            sql += f" AND status IN ({', '.join('?' * len(status))})"
            args.extend(status)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [json.loads(r[0]) for r in self._rows(sql, *args)]

    def oldest_first(self, status: str) -> list[str]:
        return [r[0] for r in self._rows("SELECT id FROM jobs WHERE status = ? ORDER BY seq", status)]

    # -- events ----------------------------------------------------------------------------------

    def add_event(self, job_id: str, message: str, level: str = "info", data: dict[str, Any] | None = None,
                  kind: str = "message") -> dict[str, Any]:
        with self._lock:
            seq = self._db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM events").fetchone()[0]
            body = {"id": f"ftevent-{job_id.removeprefix('ftjob-')}-{seq}", "object": "fine_tuning.job.event",
                    "created_at": int(time.time()), "level": level, "message": message, "data": data or {},
                    "type": kind}
            self._db.execute("INSERT INTO events (id, job_id, body) VALUES (?, ?, ?)",
                             (body["id"], job_id, json.dumps(body)))
            return body

    def events(self, job_id: str, after: str | None = None, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first, as OpenAI lists them; ``after``: only events older than that event."""
        sql, args = "SELECT body FROM events WHERE job_id = ?", [job_id]
        if after is not None:
            sql += " AND seq < COALESCE((SELECT seq FROM events WHERE id = ?), 0)"
            args.append(after)
        sql += " ORDER BY seq DESC"
        if limit is not None:
            sql += " LIMIT ?"
            args.append(limit)
        return [json.loads(r[0]) for r in self._rows(sql, *args)]
