"""The control schema as tdedge made it before it was versioned: every table of the
control plane. Databases made then by ``create_all`` hold some or all of these tables
already; each is created only where it is missing, so such a database is taken over
as it is (its rows kept), and an empty one is made whole.

Revision ID: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_table(
        "bulk_imports",
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("database", sa.String(length=128), nullable=False),
        sa.Column("table", sa.String(length=128), nullable=False),
        sa.Column("unique_id", sa.String(length=128), nullable=False),
        sa.Column("md5_hex", sa.String(length=32), nullable=False),
        sa.Column("records", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("account_id", "database", "table", "unique_id"),
        if_not_exists=True,
    )
    op.create_index(
        "bulk_imports_created_at", "bulk_imports", ["created_at"], unique=False, if_not_exists=True
    )
    op.create_table(
        "bulk_session_parts",
        sa.Column("session_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("bytes", sa.BigInteger(), nullable=False),
        sa.Column("records", sa.BigInteger(), nullable=False),
        sa.Column("error_records", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("session_id", "name"),
        if_not_exists=True,
    )
    op.create_table(
        "bulk_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("database", sa.String(length=128), nullable=False),
        sa.Column("table", sa.String(length=128), nullable=False),
        sa.Column("token", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=12), nullable=False),
        sa.Column("frozen", sa.Boolean(), nullable=False),
        sa.Column("job_id", sa.BigInteger(), nullable=True),
        sa.Column("valid_records", sa.BigInteger(), nullable=True),
        sa.Column("error_records", sa.BigInteger(), nullable=True),
        sa.Column("valid_parts", sa.BigInteger(), nullable=True),
        sa.Column("error_parts", sa.BigInteger(), nullable=True),
        sa.Column("attempt", sa.String(length=32), nullable=True),
        sa.Column("published", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("account_id", "name"),
        sqlite_autoincrement=True,
        if_not_exists=True,
    )
    op.create_index(
        "bulk_sessions_updated", "bulk_sessions", ["updated_at"], unique=False, if_not_exists=True
    )
    op.create_table(
        "job_result_targets",
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("job_id"),
        if_not_exists=True,
    )
    op.create_table(
        "jobs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("key_id", sa.String(length=12), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("database", sa.String(length=128), nullable=False),
        sa.Column("query", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=8), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("retry_limit", sa.Integer(), nullable=False),
        sa.Column("scheduled_time", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.Float(), nullable=False),
        sa.Column("updated_at", sa.Float(), nullable=False),
        sa.Column("start_at", sa.Float(), nullable=True),
        sa.Column("end_at", sa.Float(), nullable=True),
        sa.Column("result_schema", sa.Text(), nullable=True),
        sa.Column("num_records", sa.BigInteger(), nullable=True),
        sa.Column("result_size", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("kill_requested", sa.Boolean(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sqlite_autoincrement=True,
        if_not_exists=True,
    )
    op.create_index("jobs_account", "jobs", ["account_id", "id"], unique=False, if_not_exists=True)
    op.create_index(
        "jobs_status", "jobs", ["status", "priority", "id"], unique=False, if_not_exists=True
    )
    op.create_table(
        "p13n_configs",
        sa.Column("version", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("applied_at", sa.BigInteger(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("config", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("version"),
        if_not_exists=True,
    )
    op.create_table(
        "p13n_lookup_tokens",
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("token_id", sa.String(length=12), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("lookup", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
        sa.UniqueConstraint("token_id"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_p13n_lookup_tokens_service",
        "p13n_lookup_tokens",
        ["service"],
        unique=False,
        if_not_exists=True,
    )
    op.create_table(
        "p13n_meta",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        if_not_exists=True,
    )
    op.create_table(
        "p13n_services",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
        sa.UniqueConstraint("instance_id"),
        if_not_exists=True,
    )
    op.create_table(
        "p13n_tokens",
        sa.Column("token_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("token_id", sa.String(length=12), nullable=False),
        sa.Column("service", sa.String(length=64), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("instance_id", sa.Integer(), nullable=False),
        sa.Column("public", sa.Boolean(), nullable=False),
        sa.Column("allow_ips", sa.Text(), nullable=False),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("token_hash"),
        sa.UniqueConstraint("token_id"),
        if_not_exists=True,
    )
    op.create_index(
        "ix_p13n_tokens_service", "p13n_tokens", ["service"], unique=False, if_not_exists=True
    )
    op.create_table(
        "table_retention",
        sa.Column("database_name", sa.String(length=128), nullable=False),
        sa.Column("table_name", sa.String(length=128), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("database_name", "table_name"),
        if_not_exists=True,
    )
    op.create_table(
        "api_keys",
        sa.Column("key_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=12), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(length=8), nullable=False),
        sa.Column("revoked", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("key_hash"),
        sa.UniqueConstraint("key_id"),
        if_not_exists=True,
    )
    op.create_table(
        "databases",
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("account_id", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
        ),
        sa.PrimaryKeyConstraint("name"),
        if_not_exists=True,
    )


def downgrade() -> None:
    raise NotImplementedError("the control schema is never downgraded")
