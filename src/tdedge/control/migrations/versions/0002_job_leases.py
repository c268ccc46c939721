"""Job leases: which runner holds a running job, and until when. A runner renews the
lease of its jobs while it lives; a job whose lease ran out (its runner's node died)
is queued again or failed by any other runner (control/jobs.py).

Revision ID: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("runner", sa.String(128), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.Float, nullable=True))


def downgrade() -> None:
    raise NotImplementedError("the control schema is never downgraded")
