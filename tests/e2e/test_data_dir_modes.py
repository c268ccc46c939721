"""What serve keeps on disk is its user's alone: the data dir 0700, no file or directory
in it open to the group or to others, whatever the umask serve was started with."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from tests.e2e.conftest import Server


def test_the_data_dir_and_everything_in_it_are_private(make_server: Any, tmp_path: Path) -> None:
    data = tmp_path / "shared"
    data.mkdir(mode=0o755)  # made beforehand, readable by all
    os.chmod(data, 0o755)
    srv: Server = make_server(data_dir=data)
    assert srv.postback("test_db", "private", {"n": 1}, key=srv.write_key).status_code == 200
    srv.wait_for("SELECT n FROM test_db.private", lambda rows: rows == [{"n": 1}])
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    open_to_others = [
        f"{p.relative_to(data)} {stat.filemode(p.lstat().st_mode)}"
        for p in data.rglob("*")
        if not p.is_symlink() and p.lstat().st_mode & 0o077
    ]
    assert open_to_others == []
    # Not an empty walk: the journal, the control database and the lake are there.
    names = {p.name for p in data.rglob("*")}
    assert {"journal", "control.sqlite", "catalog.sqlite"} <= names
