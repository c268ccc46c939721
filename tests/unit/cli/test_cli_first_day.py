"""The CLI's own texts: --help without markup and with defaults, every problem of a p13n
file in one run; and the access log's sampling."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from tdedge.cli import main
from tdedge.edge.access_log import AccessLog


def commands(group: click.Group, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found = [prefix]
    for name, cmd in group.commands.items():
        if cmd.hidden:
            continue
        if isinstance(cmd, click.Group):
            found += commands(cmd, (*prefix, name))
        else:
            found.append((*prefix, name))
    return found


@pytest.mark.parametrize("path", commands(main), ids=lambda p: " ".join(p) or "tdedge")
def test_help_shows_no_markup_and_every_default(path: tuple[str, ...]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "`" not in result.output, result.output
    cmd: click.Command = main
    for name in path:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    for param in cmd.params:
        if not isinstance(param, click.Option) or param.hidden or param.name == "help":
            continue
        if param.multiple or param.default in (None, (), "", False):
            continue  # nothing to show
        if param.is_flag and not param.secondary_opts:
            continue
        line = next(x for x in result.output.splitlines() if param.opts[0] in x)
        block = result.output[result.output.index(line) :].split("\n  -", 1)[0]
        assert "[default:" in block, (param.opts, block)


def test_serve_help_shows_the_access_log_off_and_the_log_levels() -> None:
    result = CliRunner().invoke(main, ["serve", "--help"], terminal_width=200)
    assert "--access-log / --no-access-log" in result.output
    assert "[default: no-access-log]" in result.output
    assert "critical|error|warning|info|debug" in result.output


BAD = """\
services:
  - name: web
    database: retail
    evnt_tables: [pageviews]
    key_columns: [td_client_id]
    attributes:
      - {name: views, type: counter}
      - {name: bad, type: nosuchtype}
  - name: app
    database: retail
    event_tables: [pageviews]
    key_columns: [td_client_id]
    attributes:
      - {name: views, type: counter}
    personalizations:
      - section: s
        criteria: {attribute: nosuch, operator: GreaterEqual, value: 2}
        payload: {attributes: {views: views}}
  - name: third
    database: 5
    event_tables: [pageviews]
    key_columns: [td_client_id]
"""


def test_p13n_check_reports_every_problem_in_one_run(tmp_path: Path) -> None:
    path = tmp_path / "p13n.yaml"
    path.write_text(BAD)
    result = CliRunner().invoke(main, ["p13n", "apply", "--check", str(path)])
    assert result.exit_code == 1
    out = result.output
    assert "services[0].attributes[1].type" in out  # an item's shape
    assert "services[0].evnt_tables: unknown field" in out  # a service's shape
    assert "services[2].database" in out  # another service's
    assert "services[1].personalizations[0].criteria.attribute: no attribute" in out  # meaning
    assert "5 problems" in out


def test_the_access_log_is_sampled_past_its_rate_and_counts_what_it_left_out(
    caplog: pytest.LogCaptureFixture,
) -> None:
    access = AccessLog(per_s=10, now=0.0)
    fields = {
        "client": "192.0.2.1",
        "method": "POST",
        "path": "/p",
        "error": None,
        "door": "legacy",
        "route": "postback",
        "sent_bytes": 2,
        "duration_ms": 1.0,
    }
    with caplog.at_level(logging.INFO, logger="tdedge.access"):
        for i in range(100):  # 100 requests within a tenth of a second
            access.request(i / 1000, status=200, **fields)  # type: ignore[arg-type]
        access.request(0.1, status=503, **fields)  # type: ignore[arg-type]
        access.request(1.5, status=200, **fields)  # type: ignore[arg-type]
    written = [r for r in caplog.records if r.name == "tdedge.access"]
    assert 10 <= len(written) <= 13  # the burst, then what the rate refilled
    assert getattr(written[-2], "status", None) == 503  # a server error is always written
    skipped = sum(getattr(r, "skipped", 0) for r in written)
    assert len(written) + skipped == 102


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_shell_completion_as_docs_operations_gives_it(shell: str) -> None:
    docs = (Path(__file__).resolve().parents[3] / "docs" / "operations.md").read_text()
    assert f"_TDEDGE_COMPLETE={shell}_source tdedge" in docs
    script = Path(sys.executable).parent / "tdedge"
    done = subprocess.run(
        [str(script)],
        env={**os.environ, "_TDEDGE_COMPLETE": f"{shell}_source"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "_tdedge_completion" in done.stdout
    words = subprocess.run(
        [str(script)],
        env={
            **os.environ,
            "_TDEDGE_COMPLETE": "bash_complete",
            "COMP_WORDS": "tdedge sta",
            "COMP_CWORD": "1",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "plain,status" in words.stdout.splitlines()
