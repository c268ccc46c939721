"""p13n batch facts on the control database, and leases.

On a shared control database the batch segments and imported attributes live here
(realtime/batch_shared.py): one node computes them and every node copies them into
its own file. A lease (control/leases.py) says which node's refresher computes.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "p13n_batch_facts",
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("value", sa.LargeBinary(), nullable=True),
        sa.PrimaryKeyConstraint("service", "key", "kind", "name"),
    )
    op.create_index("p13n_batch_facts_by_source", "p13n_batch_facts", ["service", "kind", "name"])
    op.create_table(
        "p13n_batch_sources",
        sa.Column("service", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("sql", sa.Text(), nullable=False),
        sa.Column("refreshed_ms", sa.BigInteger(), nullable=False),
        sa.Column("rows", sa.BigInteger(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("facts_version", sa.String(32), nullable=False),
        sa.Column("refreshed_by", sa.String(128), nullable=True),
        sa.PrimaryKeyConstraint("service", "kind", "name"),
    )
    op.create_table(
        "leases",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("holder", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    raise NotImplementedError("the control schema is never downgraded")
