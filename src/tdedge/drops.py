"""Dropping a table or a database: the one path the REST API's deletes and the CLI's
``tdedge table drop`` / ``tdedge db drop`` share.

The lake's DDL goes through LakeCatalog (a short-lived writable connection; the
loader, which caches the lake's columns, finds out at its next commit to the table);
the control store then forgets the database, and the retention of what was dropped.
Records still on their way to a dropped table make it again, as any first record does.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tdedge.control.retention import RetentionRules
from tdedge.control.store import databases
from tdedge.lake.inventory import LakeCatalog


def drop_table(catalog: LakeCatalog, control: Engine, database: str, table: str) -> None:
    catalog.drop_table(database, table)
    RetentionRules(control).forget_table(database, table)


def drop_database(catalog: LakeCatalog, control: Engine, database: str) -> None:
    catalog.drop_database(database)
    with control.begin() as conn:
        conn.execute(sa.delete(databases).where(databases.c.name == database))
    RetentionRules(control).forget_database(database)
