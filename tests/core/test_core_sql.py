"""``among``: an ``IN`` list bound at execution, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from idds_jupyter.store.engine import make_engine
from idds_jupyter.store.sql import among

meta = MetaData()
things = Table("things", meta, Column("id", Integer, primary_key=True), Column("tag", String))


def test_the_same_rows_for_any_length_empty_and_negated(tmp_path: Path, db_url: str) -> None:
    engine = make_engine(db_url)
    meta.create_all(engine)
    by_id = select(things.c.id).where(among(things.c.id)).order_by(things.c.id)
    not_tag = select(things.c.id).where(among(things.c.tag, "tags", negate=True))
    with engine.begin() as conn:
        conn.execute(insert(things), [{"id": i, "tag": f"t{i % 3}"} for i in range(1, 51)])
        for ids in ([7], [3, 9, 40], list(range(1, 60)), []):
            want = sorted(i for i in ids if 1 <= i <= 50)
            assert conn.execute(by_id, {"ids": ids}).scalars().all() == want
        assert sorted(conn.execute(not_tag, {"tags": ["t0", "t1"]}).scalars()) == list(
            range(2, 51, 3)
        )
        assert len(conn.execute(not_tag, {"tags": []}).scalars().all()) == 50
        # inside a subquery, correlated to nothing: its table is the subquery's FROM
        sub = select(things.c.tag).where(among(things.c.id)).scalar_subquery()
        assert conn.execute(select(sub), {"ids": [5]}).scalar() == "t2"
    engine.dispose()


def test_postgresql_gets_one_statement_text_whatever_the_length() -> None:
    """``= ANY(array)``: the text PostgreSQL prepares once; SQLite expands ``IN``."""
    stmt = select(things.c.id).where(among(things.c.id), among(things.c.tag, "t", negate=True))
    pg = str(stmt.compile(dialect=postgresql.dialect()))
    assert "things.id = ANY (%(ids)s::INTEGER[])" in pg
    assert "things.tag != ALL (%(t)s::VARCHAR[])" in pg
    lite = str(stmt.compile(dialect=sqlite.dialect()))
    assert "things.id IN (__[POSTCOMPILE_ids])" in lite
    assert "(things.tag NOT IN (__[POSTCOMPILE_t]))" in lite
