"""jobs.id on SQLite: AUTOINCREMENT, so that job ids can be reserved ahead

An HPO study's next trial goes to its worker before its row is written, under an id
reserved beforehand (``store.jobs.reserve_job_ids``). SQLite reuses the largest rowid
plus one unless the table is AUTOINCREMENT, whose high-water mark (``sqlite_sequence``)
a reservation moves up. PostgreSQL's sequence reserves them as it is.

Revision ID: 0005
Revises: 0004
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    _rebuild_jobs(autoincrement=True)


def downgrade() -> None:
    _rebuild_jobs(autoincrement=False)


def _rebuild_jobs(autoincrement: bool) -> None:
    """SQLite sets AUTOINCREMENT only as a table is created: the table is copied anew."""
    if op.get_bind().dialect.name != 'sqlite':
        return
    with op.batch_alter_table('jobs', recreate='always',
                              table_kwargs={'sqlite_autoincrement': autoincrement}):
        pass
