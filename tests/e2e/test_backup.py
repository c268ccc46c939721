"""``tdedge backup`` while records keep arriving, then ``tdedge restore``: the restored
data dir has every record acknowledged before the backup began, exactly once, and
goes on taking records."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from tests.e2e.conftest import Server
from tests.e2e.test_crash import Senders


def _tdedge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tdedge", *args], capture_output=True, text=True, timeout=120
    )


def test_restored_backup_under_load_has_every_acknowledged_record_once(
    make_server: Any, tmp_path: Path
) -> None:
    srv: Server = make_server(["--workers", "2"])
    senders = Senders(srv)
    senders.start()
    senders.wait_for(1000)
    before = list(senders.acked)  # every one of these got its 200 before the backup began
    backup_dir = tmp_path / "backup"
    srv.cli("backup", str(backup_dir))
    senders.wait_for(len(senders.acked) + 500)  # the load went on during the backup
    senders.stop()
    srv.stop()

    restored = tmp_path / "restored"
    done = _tdedge("restore", "--data-dir", str(restored), str(backup_dir))
    assert done.returncode == 0, done.stderr
    again = Server(restored)
    again.master_key, again.write_key = srv.master_key, srv.write_key  # restored with it
    try:
        again.start()
        rows = again.wait_for(
            "SELECT id FROM crash_db.events",
            lambda r: {x["id"] for x in r} >= set(before),
            timeout=60,
        )
        assert len(rows) == len({r["id"] for r in rows}), "a record landed twice"
        # New records load too: the journal numbers them after what the lake loaded.
        for i in range(20):
            r = again.postback("crash_db", "after", {"i": i}, key=again.write_key)
            assert r.status_code == 200
        again.wait_for("SELECT count(*) AS n FROM crash_db.after", lambda r: r[0]["n"] == 20)
        rows = again.query("SELECT id, count(*) AS c FROM crash_db.events GROUP BY id HAVING c > 1")
        assert rows == []
    finally:
        again.kill()


def test_restore_refuses_a_data_dir_in_use_or_not_empty(server: Server, tmp_path: Path) -> None:
    assert server.postback("test_db", "t", {"a": 1}, key=server.write_key).status_code == 200
    server.wait_for("SELECT count(*) AS n FROM test_db.t", lambda r: r[0]["n"] == 1)
    backup_dir = tmp_path / "backup"
    server.cli("backup", str(backup_dir))
    manifest = msgspec.json.decode((backup_dir / "tdedge-backup.json").read_bytes())
    assert {f["path"] for f in manifest["files"]} >= {
        "control.sqlite",
        "lake/catalog.sqlite",
        "journal/shard-00.sqlite",
    }

    done = _tdedge("restore", "--data-dir", str(server.data_dir), str(backup_dir))
    assert done.returncode != 0
    assert "in use by a running tdedge server" in done.stderr

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    done = _tdedge("restore", "--data-dir", str(other), str(backup_dir))
    assert done.returncode != 0
    assert "not empty" in done.stderr
    assert (other / "notes.txt").read_text() == "mine"

    done = _tdedge("backup", "--data-dir", str(server.data_dir), str(backup_dir))
    assert done.returncode != 0, "a backup must not be written over another"
    done = _tdedge("backup", "--data-dir", str(server.data_dir), str(server.data_dir / "bk"))
    assert done.returncode != 0 and "inside the data dir" in done.stderr

    fresh = tmp_path / "fresh"
    done = _tdedge("restore", "--data-dir", str(fresh), str(backup_dir))
    assert done.returncode == 0, done.stderr
    rows = msgspec.json.decode(
        _tdedge(
            "query", "--data-dir", str(fresh), "--format", "json", "SELECT a FROM test_db.t"
        ).stdout
    )
    assert rows == [{"a": 1}]

    done = _tdedge("restore", "--data-dir", str(tmp_path / "x"), str(tmp_path))
    assert done.returncode != 0
    assert "not a finished tdedge backup" in done.stderr


@pytest.mark.parametrize("stored", [3, None])
def test_journal_numbering_resumes_after_the_lake_position(
    tmp_path: Path, stored: int | None
) -> None:
    from tdedge.journal.sqlite import _connect, continue_after, shard_path

    journal = tmp_path / "journal"
    journal.mkdir()
    if stored is not None:
        conn = _connect(shard_path(journal, "shard-00"))
        for _ in range(stored):
            conn.execute("INSERT INTO journal (received_ms, n, envelopes) VALUES (0, 1, x'')")
        conn.close()
    continue_after(journal, {"shard-00": 10})
    conn = _connect(shard_path(journal, "shard-00"))
    seq = conn.execute(
        "INSERT INTO journal (received_ms, n, envelopes) VALUES (0, 1, x'') RETURNING seq"
    ).fetchone()[0]
    conn.close()
    assert seq == 11
