"""Where the commands' options come from: the command line, else TDEDGE_* variables,
else the --config file, else the default; shown by ``tdedge config show`` with secrets
masked; and every command acting on the control database ``--control`` names."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import msgspec
import pytest
import sqlalchemy as sa
from click.testing import CliRunner, Result

from tdedge.cli import main
from tdedge.control import schema
from tdedge.control.store import engine_for
from tests import postgres


def run(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, list(args), env=env or {}, catch_exceptions=False)


def shown(result: Result) -> dict[str, tuple[str, str]]:
    """config show's rows as {setting: (value, source)}."""
    assert result.exit_code == 0, result.output
    rows = msgspec.json.decode(result.output)
    return {
        r["setting"]: (str(r["value"] if r["value"] is not None else ""), r["source"]) for r in rows
    }


def test_flag_goes_before_environment_before_file_before_default(tmp_path: Path) -> None:
    config = tmp_path / "tdedge.toml"
    config.write_text(
        'control = "postgresql://app:s3cret@file-host/tdedge"\nport = 9090\nworkers = 3\n'
        'cors-origin = ["https://a.example"]\n'
    )
    env = {"TDEDGE_PORT": "7070", "TDEDGE_CONTROL": "postgresql://app:envpw@env-host/tdedge"}
    rows = shown(
        run(
            "config",
            "show",
            "--format",
            "json",
            "--config",
            str(config),
            "--data-dir",
            str(tmp_path),
            env=env,
        )
    )
    assert rows["data_dir"] == (str(tmp_path), "flag")
    assert rows["control"] == ("postgresql://app:***@env-host/tdedge", "env TDEDGE_CONTROL")
    assert rows["port"] == ("7070", "env TDEDGE_PORT")
    assert rows["workers"] == ("3", f"file {config}")
    assert rows["cors_origins"] == ("https://a.example", f"file {config}")
    assert rows["host"] == ("127.0.0.1", "default")
    flagged = shown(
        run(
            "--config",
            str(config),
            "config",
            "show",
            "--format",
            "json",
            "--control",
            "sqlite:////x/c.sqlite",
        )
    )
    assert flagged["control"] == ("sqlite:////x/c.sqlite", "flag")
    assert flagged["port"] == ("9090", f"file {config}")
    no_file = shown(run("config", "show", "--format", "json", "--data-dir", str(tmp_path)))
    assert no_file["control"] == (f"sqlite:///{tmp_path}/control.sqlite", "default")


def test_secrets_never_print(tmp_path: Path) -> None:
    env = {
        "TDEDGE_CONTROL": "postgresql://app:hunter2@db:5432/tdedge",
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "wJalrXUtnFEMI",
    }
    result = run("config", "show", "--data-dir", str(tmp_path), "--format", "json", env=env)
    assert result.exit_code == 0
    assert "hunter2" not in result.output and "wJalrXUtnFEMI" not in result.output
    assert "AKIDEXAMPLE" in result.output


def test_a_file_naming_an_unknown_option_is_refused(tmp_path: Path) -> None:
    config = tmp_path / "tdedge.toml"
    config.write_text('contrl = "postgresql://db/tdedge"\n')
    result = run("keys", "list", "--config", str(config), "--data-dir", str(tmp_path))
    assert result.exit_code == 2
    assert "unknown setting(s) contrl" in result.output
    config.write_text("[serve]\nport = 1\n")
    result = run("--config", str(config), "keys", "list")
    assert result.exit_code == 2 and "tables are not read (serve)" in result.output


@pytest.fixture(scope="module")
def pg() -> Iterator[postgres.Postgres]:
    with postgres.server() as server:
        yield server


def test_commands_act_on_the_control_database_named(pg: postgres.Postgres, tmp_path: Path) -> None:
    url = pg.new_database()
    one, two = str(tmp_path / "one"), str(tmp_path / "two")
    created = run("keys", "create", "--type", "master", "--data-dir", one, "--control", url)
    assert created.exit_code == 0, created.output
    # Another node's data dir, with the URL from the environment: the same keys.
    listed = run("keys", "list", "--format", "json", "--data-dir", two, env={"TDEDGE_CONTROL": url})
    assert listed.exit_code == 0, listed.output
    assert '"type":"master"' in listed.output
    config = tmp_path / "tdedge.toml"
    config.write_text(f'control = "{url}"\n')
    made = run("--config", str(config), "db", "create", "shared_db", "--data-dir", two)
    assert made.exit_code == 0, made.output
    dbs = run("db", "list", "--data-dir", one, "--control", url)
    assert "shared_db" in dbs.output
    # The embedded default is another control plane: none of it there.
    alone = run("db", "list", "--data-dir", two)
    assert "shared_db" not in alone.output


def test_a_control_database_of_a_newer_tdedge_is_refused(
    pg: postgres.Postgres, tmp_path: Path
) -> None:
    url = pg.new_database()
    assert run("keys", "create", "--data-dir", str(tmp_path), "--control", url).exit_code == 0
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(sa.text("UPDATE alembic_version SET version_num = 'f00d'"))
    engine.dispose()
    schema._ready.clear()  # as a process starting now finds it
    result = run("keys", "list", "--data-dir", str(tmp_path), "--control", url)
    assert result.exit_code == 1
    assert "schema revision f00d, newer than this tdedge knows" in result.output
