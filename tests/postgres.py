"""A real PostgreSQL server (with the pgvector extension) for the scale-out tests, started by the tests.

The server binaries come from the ``pgserver`` wheel on PyPI (PostgreSQL 16 with pgvector, no system
packages needed; it runs the server as an unprivileged user when the tests run as root). Each test
session gets its own data folder under pytest's temporary folder, reached over a Unix socket, and the
server is stopped when the session ends. Nothing here is mocked: a test that needs PostgreSQL gets one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote


@dataclass
class Postgres:
    server: object  # pgserver.PostgresServer
    socket_dir: Path

    def url(self, database: str = "postgres", driver: str = "postgresql+psycopg") -> str:
        """An SQLAlchemy URL (Optuna's storage); ``driver="postgresql"`` gives a libpq URI (psycopg)."""
        return f"{driver}://postgres:@/{database}?host={quote(str(self.socket_dir))}"

    def create_database(self, name: str) -> str:
        """A new empty database (one per test keeps tests independent); returns its SQLAlchemy URL."""
        import psycopg

        with psycopg.connect(self.url(driver="postgresql"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def stop(self) -> None:
        self.server.cleanup()


def start_postgres(folder: Path) -> Postgres:
    import pgserver

    folder.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(str(folder), cleanup_mode="stop")
    return Postgres(server, folder)
