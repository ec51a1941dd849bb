"""function_stats: measured run time per function, for backend selection policies

Revision ID: 0004
Revises: 0003
"""
import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'function_stats',
        sa.Column('key', sa.String(255), primary_key=True),
        sa.Column('n', sa.BigInteger(), nullable=False),
        sa.Column('mean_wall_s', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table('function_stats')
