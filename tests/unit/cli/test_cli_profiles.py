"""``--profiles``: a URL the profile store cannot use is refused when the command starts."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tdedge.cli import main


@pytest.mark.parametrize(
    "args",
    [
        ["serve"],
        ["p13n", "profile", "td_client_id=x"],
        ["p13n", "explain", "td_client_id=x"],
    ],
)
def test_a_profiles_url_that_is_not_redis_is_refused(tmp_path: Path, args: list[str]) -> None:
    done = CliRunner().invoke(
        main, [*args, "--data-dir", str(tmp_path), "--profiles", "postgresql://db/1"]
    )
    assert done.exit_code == 2, done.output
    assert "expected redis://host:port/db" in done.output
    assert not (tmp_path / "p13n").exists()  # refused before anything started
