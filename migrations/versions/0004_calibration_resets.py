"""calibration resets: `vecaudit calibration reset` forgets the false_positive verdicts given before it, per
collection and optionally per rule (review-driven recalibration starts again from later verdicts)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04 21:40:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('calibration_resets',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('collection_id', sa.Integer(), nullable=False),
    sa.Column('rule_id', sa.String(length=20), nullable=True),
    sa.Column('actor', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], name=op.f('fk_calibration_resets_collection_id_collections')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calibration_resets'))
    )
    with op.batch_alter_table('calibration_resets', schema=None) as batch_op:
        batch_op.create_index('ix_calibration_resets_collection_rule', ['collection_id', 'rule_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('calibration_resets', schema=None) as batch_op:
        batch_op.drop_index('ix_calibration_resets_collection_rule')
    op.drop_table('calibration_resets')
