"""The configuration file: the issue's example applies; bad files point at lines."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from tdedge.cli import main
from tdedge.realtime import validation
from tdedge.realtime.config import CounterSpec, ImportedSpec, ListSpec, SingleSpec
from tdedge.realtime.errors import ConfigInvalid

EXAMPLE = (Path(__file__).parents[1] / "data" / "p13n-example.yaml").read_text()


def problems(text: str) -> list[tuple[int | None, str, str]]:
    with pytest.raises(ConfigInvalid) as e:
        validation.parse(text, "f.yaml")
    return [(p.line, p.path, p.message) for p in e.value.problems]


def test_the_issue_example_is_valid() -> None:
    c = validation.parse(EXAMPLE)
    (web,) = c.services
    assert [type(a) for a in web.attributes] == [
        SingleSpec,
        ListSpec,
        CounterSpec,
        CounterSpec,
        ImportedSpec,
    ]
    assert web.segments[0].id == "1588214"
    assert [p.section for p in web.personalizations] == ["offer_for_high_loyalty", "women_shoppers"]


def test_shape_errors_name_line_and_field_for_every_item() -> None:
    bad = EXAMPLE.replace("max_items: 10", "max_items: ten").replace(
        "type: imported", "type: importd"
    )
    found = problems(bad)
    assert found[0][:2] == (8, "services[0].attributes[1].max_items")
    assert "expected 'int'" in found[0][2]
    assert found[1][:2] == (11, "services[0].attributes[4].type")


def test_unknown_fields_are_refused_at_their_line() -> None:
    bad = EXAMPLE.replace("max_items: 10}", "max_items: 10, colour: red}")
    ((line, path, message),) = problems(bad)
    assert (line, path) == (8, "services[0].attributes[1].colour")
    assert "unknown field" in message


def test_meaning_errors_are_all_reported() -> None:
    bad = (
        EXAMPLE.replace("window: 7d", "window: 7x")
        .replace('segment: "1588214"', 'segment: "158821"')
        .replace("value: women}", "value: women}, {attribute: nope, operator: Equal, value: 1}")
        .replace("status: loyalty", "status: loyalti")
    )
    found = problems(bad)
    assert [(line, path) for line, path, _ in found] == [
        (9, "services[0].attributes[2].window"),
        (16, "services[0].personalizations[0].criteria.all[0].segment"),
        (18, "services[0].personalizations[0].payload.attributes.status"),
        (21, "services[0].personalizations[1].criteria.any[1].attribute"),
    ]
    assert "did you mean '1588214'" in found[1][2]


@pytest.mark.parametrize(
    ("text", "line", "fragment"),
    [
        ("services:\n  - name: [a\n", 3, "not valid YAML"),
        ("services:\n  - name: a\n    name: b\n", 3, "duplicate key 'name'"),
        ("services:\n  - name: a\n    database: retail\n", 2, "event_tables"),
        ("- a\n", 1, "mapping"),
        (
            "services:\n  - {name: w, database: Retail, event_tables: [pv1], key_columns: [id]}\n",
            2,
            "3 to 128 of a-z",
        ),
        (
            "services:\n  - {name: w, database: shop, event_tables: [pv1],\n"
            "     key_columns: [id, id]}\n",
            3,
            "listed twice",
        ),
    ],
)
def test_small_files(text: str, line: int, fragment: str) -> None:
    found = problems(text)
    assert found[0][0] == line
    assert fragment in found[0][2]


def test_section_and_attribute_names_are_unique() -> None:
    bad = EXAMPLE.replace("section: women_shoppers", "section: offer_for_high_loyalty").replace(
        "name: total_spend", "name: purchases_7d"
    )
    found = problems(bad)
    assert {path for _, path, _ in found} == {
        "services[0].attributes[3].name",
        "services[0].personalizations[1].section",
    }


def test_counter_bucket_needs_a_window() -> None:
    bad = EXAMPLE.replace("increment_column: amount}", "increment_column: amount, bucket: 1h}")
    ((line, path, message),) = problems(bad)
    assert (line, path) == (10, "services[0].attributes[3].bucket")
    assert "window" in message


def test_apply_is_atomic_and_show_prints_what_was_applied(tmp_path: Path) -> None:
    runner = CliRunner()
    good = tmp_path / "good.yaml"
    good.write_text(EXAMPLE)
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.replace("window: 7d", "window: 7x"))
    dd = ["--data-dir", str(tmp_path / "data")]

    done = runner.invoke(main, ["p13n", *dd, "apply", str(bad)])
    assert done.exit_code == 1
    assert "bad.yaml:9: services[0].attributes[2].window" in done.output
    assert "nothing was changed" in done.output
    assert runner.invoke(main, ["p13n", *dd, "show"]).exit_code == 1

    done = runner.invoke(main, ["p13n", *dd, "apply", str(good)])
    assert done.exit_code == 0, done.output
    assert "version 1" in done.output
    done = runner.invoke(main, ["p13n", *dd, "apply", str(bad)])
    assert done.exit_code == 1
    shown = runner.invoke(main, ["p13n", *dd, "show"])
    assert shown.exit_code == 0
    assert "# version 1" in shown.output
    assert "window: 7d" in shown.output and "# the configuration's database" in shown.output
