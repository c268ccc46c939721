"""serve's ``--roles``: what it accepts, from the flag, TDEDGE_ROLES or the config file
(shown by ``tdedge config show``), and the usage errors that stop a serve before it
makes its data dir."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest
from click.testing import CliRunner, Result

from tdedge.cli import main


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--roles", "edge,lodaer"], {}, "unknown role 'lodaer'; the roles are edge, loader"),
        (["--roles", ""], {}, "name at least one role of edge, loader, jobs, engine"),
        (["--roles", " , "], {}, "name at least one role"),
        ([], {"TDEDGE_ROLES": "web"}, "unknown role 'web'"),
        (["--roles", "loader", "--api-port", "9"], {}, "--api-port serves a door: it needs"),
        (["--roles", "loader", "--no-loader"], {}, "--no-loader leaves no role to run"),
    ],
)
def test_a_wrong_role_is_a_usage_error_naming_the_roles(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    data = tmp_path / "data"
    result = run("serve", "--data-dir", str(data), *args, env=env)
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert not data.exists()  # refused before anything was made


def test_roles_come_from_flag_then_environment_then_file(tmp_path: Path) -> None:
    config = tmp_path / "tdedge.toml"
    config.write_text('roles = ["loader", "jobs"]\n')

    def roles(*args: str, env: dict[str, str] | None = None) -> list[str]:
        result = run(
            "config", "show", "--format", "json", "--data-dir", str(tmp_path), *args, env=env
        )
        assert result.exit_code == 0, result.output
        [row] = [r for r in msgspec.json.decode(result.output) if r["setting"] == "roles"]
        return [row["value"], row["source"]]

    assert roles() == ["edge,loader,jobs,engine", "default"]
    assert roles("--config", str(config)) == ["loader,jobs", f"file {config}"]
    env = {"TDEDGE_ROLES": "edge"}
    assert roles("--config", str(config), env=env) == ["edge", "env TDEDGE_ROLES"]


def test_help_says_no_loader_is_leaving_loader_out() -> None:
    text = " ".join(run("serve", "--help").output.split())
    assert "--roles ROLES What this node runs: edge" in text
    assert "--no-loader is the same as leaving loader out of --roles" in text
