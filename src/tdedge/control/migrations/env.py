"""Alembic's environment for the control database: tdedge runs the migrations itself
(control/schema.py), on a connection it has already locked, so this only hands that
connection to Alembic. Batch mode lets a migration alter a table on SQLite too."""

from __future__ import annotations

from alembic import context

context.configure(connection=context.config.attributes["connection"], render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
