"""Driver errors the database layer turns into API errors."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from oris.domain.errors import InvalidArgument
from oris.services.runtime import Runtime
from oris.store.database import after_commit
from oris.store.tables import jobs


async def test_a_nul_character_that_reaches_the_database_is_the_callers_error(rt: Runtime) -> None:
    # Validation refuses U+0000 in every declared text field; a filter it missed must still be
    # a 400, not a 500. PostgreSQL refuses the character; SQLite compares it and finds nothing.
    statement = select(jobs.c.thread_id).where(jobs.c.thread_id == "a\x00b")
    if rt.db.is_postgres:
        with pytest.raises(InvalidArgument, match="NUL"):
            async with rt.db.read() as conn:
                await conn.execute(statement)
    else:
        async with rt.db.read() as conn:
            assert (await conn.execute(statement)).first() is None


async def test_after_commit_callbacks_of_a_failed_transaction_never_fire(rt: Runtime) -> None:
    # Callbacks live on the pooled driver connection; a rolled-back transaction's must not be
    # run by the next transaction that commits on that connection.
    fired: list[str] = []
    with pytest.raises(RuntimeError):
        async with rt.db.write() as conn:
            after_commit(conn, lambda: fired.append("rolled back"))
            raise RuntimeError("abort")
    for _ in range(5):
        async with rt.db.write() as conn:
            await conn.execute(select(jobs.c.thread_id).limit(1))
    async with rt.db.write() as conn:
        after_commit(conn, lambda: fired.append("committed"))
    assert fired == ["committed"]
