"""The user docs against the code they describe: what an operator can set or scrape must
be on the page that documents it, and the README's commands must be the ones that run."""

from __future__ import annotations

import re
from pathlib import Path

import click
from prometheus_client.metrics import MetricWrapperBase

from tdedge import metrics
from tdedge.cli import root as cli
from tdedge.realtime import batcher, host

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = (ROOT / "docs" / "operations.md").read_text(encoding="utf-8")


def fenced_commands(text: str) -> list[str]:
    """The lines of the ```bash blocks of a Markdown text."""
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line for block in blocks for line in block.splitlines()]


def test_the_readme_runs_the_tests_as_ci_does() -> None:
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    readme = fenced_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    assert "scripts/test -q" in ci.splitlines()
    assert "scripts/test -q" in readme


def test_the_readme_and_getting_started_install_alike() -> None:
    install = "python3 -m venv .venv && .venv/bin/pip install -e . && .venv/bin/tdedge serve"
    assert install in fenced_commands((ROOT / "README.md").read_text(encoding="utf-8"))
    guide = (ROOT / "docs" / "getting-started.md").read_text(encoding="utf-8")
    assert install in fenced_commands(guide)


def test_every_serve_option_is_documented() -> None:
    options = [
        name
        for param in cli.serve.params
        if isinstance(param, click.Option)
        for name in (*param.opts, *param.secondary_opts)
        if name.startswith("--")
    ]
    assert len(options) > 20
    missing = [name for name in options if f"`{name}" not in OPERATIONS]
    assert not missing, f"serve options not in docs/operations.md: {missing}"


def test_every_metric_is_documented() -> None:
    names = set()
    for module in (metrics, batcher, host):
        for value in vars(module).values():
            if isinstance(value, MetricWrapperBase):
                for family in value.describe():
                    suffix = "_total" if family.type == "counter" else ""
                    names.add(family.name + suffix)
    assert "tdedge_requests_total" in names
    missing = sorted(name for name in names if name not in OPERATIONS)
    assert not missing, f"metrics not in docs/operations.md: {missing}"
