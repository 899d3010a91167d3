"""abandoned scans: a scan killed mid-run (kill -9, lost host) is marked 'abandoned' with the reason

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-04 21:00:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

_BEFORE = "status IN ('running', 'completed', 'partial', 'failed')"
_AFTER = "status IN ('running', 'completed', 'partial', 'failed', 'abandoned')"


def upgrade() -> None:
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_scans_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_scans_status'), _AFTER)


def downgrade() -> None:
    op.execute(sa.text("UPDATE scans SET status = 'failed' WHERE status = 'abandoned'"))
    with op.batch_alter_table('scans', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_scans_status'), type_='check')
        batch_op.create_check_constraint(op.f('ck_scans_status'), _BEFORE)
