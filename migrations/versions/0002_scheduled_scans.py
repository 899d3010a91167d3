"""scheduled scans: per-tenant vector summaries (drift) and the stage of each finding occurrence (incremental)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26 20:55:00
"""

from alembic import op
import sqlalchemy as sa


revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('tenant_summaries',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('collection_id', sa.Integer(), nullable=False),
    sa.Column('scan_id', sa.Integer(), nullable=False),
    sa.Column('tenant', sa.String(length=300), nullable=True),
    sa.Column('count', sa.Integer(), nullable=False),
    sa.Column('dim', sa.Integer(), nullable=False),
    sa.Column('centroid', sa.LargeBinary(), nullable=False),
    sa.Column('sample', sa.LargeBinary(), nullable=False),
    sa.Column('sample_size', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['collection_id'], ['collections.id'], name=op.f('fk_tenant_summaries_collection_id_collections')),
    sa.ForeignKeyConstraint(['scan_id'], ['scans.id'], name=op.f('fk_tenant_summaries_scan_id_scans')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenant_summaries'))
    )
    with op.batch_alter_table('tenant_summaries', schema=None) as batch_op:
        batch_op.create_index('ix_tenant_summaries_collection_scan', ['collection_id', 'scan_id'], unique=False)
    with op.batch_alter_table('finding_occurrences', schema=None) as batch_op:
        batch_op.add_column(sa.Column('stage', sa.String(length=10), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('finding_occurrences', schema=None) as batch_op:
        batch_op.drop_column('stage')
    with op.batch_alter_table('tenant_summaries', schema=None) as batch_op:
        batch_op.drop_index('ix_tenant_summaries_collection_scan')
    op.drop_table('tenant_summaries')
