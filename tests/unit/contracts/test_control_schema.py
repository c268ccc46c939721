"""The control schema's versions: a database is brought to the newest revision once,
by one of the processes that open it at once; one made before the schema was versioned
is taken over with its rows; one upgraded by a newer tdedge is refused."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command

from tdedge import backends
from tdedge.config import Settings
from tdedge.control import schema
from tdedge.control.keys import hash_key
from tdedge.control.store import engine_for
from tdedge.realtime import tokens

DATA = Path(__file__).parents[1] / "data"
# Made by the control code of the release before versions (every store's create_all),
# with these secrets: a master and a write key of account 1, a p13n token of "web".
UNVERSIONED = DATA / "control-unversioned.sqlite"
MASTER = "1/c212dc83393d314fb8bba6f79f3e914ccc0075f1"
WRITE = "1/5028c4f229a210a762828c651af23c80ae4c6d14"
P13N_TOKEN = "1/10001/46963c19f661df481118bde837b9168b"


def test_a_new_database_is_made_at_the_newest_revision(settings: Settings) -> None:
    store = backends.control(settings)
    try:
        assert schema.revision(store.engine) == schema.head()
        names = set(sa.inspect(store.engine).get_table_names())
        assert {"accounts", "api_keys", "jobs", "p13n_tokens", "bulk_sessions"} <= names
    finally:
        store.close()


def test_a_database_made_before_versions_is_taken_over_with_its_rows(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path))
    shutil.copy(UNVERSIONED, settings.control_db)
    store = backends.control(settings)
    jobs = backends.jobs(settings)
    registry = backends.registry(settings)
    try:
        assert schema.revision(store.engine) == schema.head()
        for key, kind in ((MASTER, "master"), (WRITE, "write")):
            found = store.key_by_hash(hash_key(key))
            assert found is not None and (found.account_id, found.type) == (1, kind)
        assert store.database_owners() == {"web": 1}
        # The job the old runner left running has no lease: any runner recovers it.
        (job,) = jobs.list(1)[1]
        assert (job.status, job.lease_until) == ("running", None)
        assert jobs.recover(0.0) == 1
        parsed = tokens.parse(P13N_TOKEN)
        assert parsed is not None and registry.token_by_hash(parsed.digest) is not None
        assert "web" in registry.instance_ids()
    finally:
        registry.close()
        jobs.close()
        store.close()


def test_an_unversioned_database_with_some_tables_gets_the_rest(settings: Settings) -> None:
    """As the first revision left it, with its version row gone: what ``create_all``
    made when some stores had not been opened yet."""
    engine = engine_for(settings.control_url)
    config = schema._config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0001")
        conn.execute(sa.text("DROP TABLE alembic_version"))
        conn.execute(sa.text("DROP TABLE p13n_tokens"))
        conn.execute(sa.text("INSERT INTO accounts (id, created_at) VALUES (42, 0)"))
    engine.dispose()
    store = backends.control(settings)
    try:
        assert store.account_count() == 1
        assert schema.revision(store.engine) == schema.head()
        columns = {c["name"] for c in sa.inspect(store.engine).get_columns("jobs")}
        assert {"runner", "lease_until"} <= columns
        assert sa.inspect(store.engine).has_table("p13n_tokens")
    finally:
        store.close()


def test_a_database_newer_than_this_tdedge_is_refused(settings: Settings) -> None:
    backends.control(settings).close()
    engine = engine_for(settings.control_url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = '9999'"))
    engine.dispose()
    schema._ready.clear()  # as a newer tdedge leaves it for a process starting now
    with pytest.raises(schema.SchemaTooNew, match="9999"):
        backends.control(settings)


OPEN_AT_ONCE = """
import sys
from tdedge.config import Settings
from tdedge import backends
from tdedge.control import schema
s = backends.control(Settings(data_dir=sys.argv[1], control=sys.argv[2]))
print(schema.revision(s.engine))
"""


def test_nodes_starting_at_once_upgrade_once(settings: Settings) -> None:
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", OPEN_AT_ONCE, settings.data_dir, settings.control_url],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outcomes = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-800:] for _, err in outcomes]
    assert {out.strip() for out, _ in outcomes} == {schema.head()}


def test_an_older_database_in_use_is_upgraded_once_by_nodes_starting_at_once(
    settings: Settings,
) -> None:
    """A rolling upgrade: the database is at an older revision and a node of that
    version keeps writing and reading through it while four newer nodes start at once.
    One of them upgrades it; the old node never fails and loses nothing."""
    engine = engine_for(settings.control_url)
    config = schema._config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0002")
    assert schema.revision(engine) == "0002"
    stop = threading.Event()
    written: list[int] = []
    failures: list[BaseException] = []

    def old_node() -> None:
        account = 1000
        while not stop.is_set():
            account += 1
            try:
                with engine.begin() as conn:
                    conn.execute(
                        sa.text("INSERT INTO accounts (id, created_at) VALUES (:id, 0)"),
                        {"id": account},
                    )
                with engine.connect() as conn:
                    conn.execute(sa.text("SELECT count(*) FROM accounts")).scalar_one()
            except BaseException as e:
                failures.append(e)
                return
            written.append(account)
            time.sleep(0.01)

    writer = threading.Thread(target=old_node)
    writer.start()
    try:
        time.sleep(0.2)
        procs = [
            subprocess.Popen(
                [sys.executable, "-c", OPEN_AT_ONCE, settings.data_dir, settings.control_url],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outcomes = [p.communicate(timeout=120) for p in procs]
        time.sleep(0.2)
    finally:
        stop.set()
        writer.join()
    assert [p.returncode for p in procs] == [0] * 4, [err[-800:] for _, err in outcomes]
    assert {out.strip() for out, _ in outcomes} == {schema.head()}
    assert not failures, failures
    assert len(written) > 10
    with engine.connect() as conn:
        found = {r[0] for r in conn.execute(sa.text("SELECT id FROM accounts WHERE id > 1000"))}
        assert schema.revision(engine) == schema.head()
    assert found == set(written)
    engine.dispose()
