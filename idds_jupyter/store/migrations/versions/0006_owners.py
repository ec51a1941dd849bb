"""owners of shared objects: dataset names per owner, blob grants, token expiry

Every user is a tenant (docs/security.md):

- ``datasets``: a name is unique per owner (``uq_datasets_owner_name``), no longer
  globally; existing rows keep the owner they were created with.
- ``blob_grants``: who may read a cache blob, one row per (digest, owner). Existing
  blobs are granted to the owner recorded with them (``blobs.owner``), and the
  result blobs of jobs to their run's owner. A blob with neither (recorded by a
  worker before 0006 and no longer referenced by a job) gets no grant: only admins
  read it — the "no owner" placeholder is the absence of a grant.
- ``api_tokens.expires_at``: tokens may expire (NULL: never, as every existing one).

Revision ID: 0006
Revises: 0005
"""
import time

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    bind = op.get_bind()
    _datasets_unique(bind, ['owner', 'name'], 'uq_datasets_owner_name')

    op.create_table('blob_grants',
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('owner', sa.String(length=255), nullable=False),
    sa.Column('created_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('sha256', 'owner')
    )
    with op.batch_alter_table('blob_grants', schema=None) as batch_op:
        batch_op.create_index('ix_blob_grants_owner', ['owner'], unique=False)
    t = time.time()
    # uploaded or recorded with an owner
    op.execute(sa.text(
        "INSERT INTO blob_grants (sha256, owner, created_at) "
        "SELECT sha256, owner, created_at FROM blobs WHERE owner IS NOT NULL"))
    # results (and pickled exceptions) of jobs: their run's owner
    op.execute(sa.text(
        "INSERT INTO blob_grants (sha256, owner, created_at) "
        "SELECT DISTINCT jobs.blob, workflows.owner, :t FROM jobs "
        "JOIN workflows ON workflows.id = jobs.workflow_id "
        "WHERE jobs.blob IS NOT NULL AND NOT EXISTS (SELECT 1 FROM blob_grants g "
        "WHERE g.sha256 = jobs.blob AND g.owner = workflows.owner)").bindparams(t=t))

    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.add_column(sa.Column('expires_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('api_tokens', schema=None) as batch_op:
        batch_op.drop_column('expires_at')
    with op.batch_alter_table('blob_grants', schema=None) as batch_op:
        batch_op.drop_index('ix_blob_grants_owner')
    op.drop_table('blob_grants')
    # fails (as it should) when two owners now hold datasets of one name
    _datasets_unique(op.get_bind(), ['name'], None)


def _datasets_unique(bind: sa.engine.Connection, columns: list[str], name: str | None) -> None:
    """Replace the unique constraint of ``datasets`` (on ``name``, or on ``owner, name``)."""
    uniques = sa.inspect(bind).get_unique_constraints('datasets')
    if bind.dialect.name == 'sqlite':
        # SQLite alters by copying the table; unnamed constraints get names to be dropped by
        conv = {'uq': 'uq_%(table_name)s_%(column_0_N_name)s'}
        with op.batch_alter_table('datasets', recreate='always',
                                  naming_convention=conv) as batch_op:
            for uq in uniques:
                batch_op.drop_constraint(
                    uq['name'] or 'uq_datasets_' + '_'.join(uq['column_names']), type_='unique')
            batch_op.create_unique_constraint(name or 'uq_datasets_name', columns)
        return
    for uq in uniques:
        if uq['name']:  # PostgreSQL names every constraint (datasets_name_key)
            op.drop_constraint(uq['name'], 'datasets', type_='unique')
    op.create_unique_constraint(name or 'datasets_name_key', 'datasets', columns)
