"""provenance of job results and the environments jobs ran in

- ``provenance``: one row per ended job (code, input, result digests; cache key;
  environment; attempts; times; the job a memoized result was taken from).
  Existing jobs get none: their code and inputs were not recorded, so they are
  never a cache hit (new tables only; nothing stored is changed).
- ``environments``: Python, platform, host and package versions by digest.

Revision ID: 0007
Revises: 0006
"""
import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')
Json = sa.JSON().with_variant(postgresql.JSONB(), 'postgresql')


def upgrade() -> None:
    op.create_table('provenance',
    sa.Column('job_id', Id, nullable=False),
    sa.Column('workflow_id', Id, nullable=False),
    sa.Column('work_id', Id, nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('code_hash', sa.String(length=64), nullable=True),
    sa.Column('input_hash', sa.String(length=64), nullable=True),
    sa.Column('cache_key', sa.String(length=64), nullable=True),
    sa.Column('result_hash', sa.String(length=64), nullable=True),
    sa.Column('env_id', sa.String(length=64), nullable=True),
    sa.Column('backend', sa.String(length=64), nullable=True),
    sa.Column('cached_from', Id, nullable=True),
    sa.Column('started_at', sa.Float(), nullable=True),
    sa.Column('finished_at', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('job_id')
    )
    with op.batch_alter_table('provenance', schema=None) as batch_op:
        batch_op.create_index('ix_provenance_workflow', ['workflow_id'], unique=False)
        batch_op.create_index('ix_provenance_cache_key', ['cache_key', 'status'], unique=False)
    op.create_table('environments',
    sa.Column('env_id', sa.String(length=64), nullable=False),
    sa.Column('info', Json, nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('env_id')
    )


def downgrade() -> None:
    op.drop_table('environments')
    with op.batch_alter_table('provenance', schema=None) as batch_op:
        batch_op.drop_index('ix_provenance_cache_key')
        batch_op.drop_index('ix_provenance_workflow')
    op.drop_table('provenance')
