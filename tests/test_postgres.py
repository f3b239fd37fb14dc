"""The scale-out tests' PostgreSQL is real: a server the tests start, with the pgvector extension."""

from __future__ import annotations


def test_the_tests_start_a_real_postgresql_with_pgvector(postgres):
    import psycopg

    postgres.create_database("smoke")
    with psycopg.connect(postgres.url("smoke", driver="postgresql"), autocommit=True) as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        distance = conn.execute("SELECT '[1,0]'::vector <-> '[0,1]'::vector").fetchone()[0]
    assert int(version.split(".")[0]) >= 15
    assert abs(distance - 2 ** 0.5) < 1e-6
