"""How the report writes numbers, tables and configurations."""

from __future__ import annotations

from report_rows import trial

from greenai.report.markdown import config_of, fmt_acc, fmt_j, short_number, table, varying_keys


def test_energy_in_joules_then_kilojoules_and_marked_when_estimated():
    assert fmt_j(9_999.94, estimated=False) == "9,999.9 J"
    assert fmt_j(12_345.0, estimated=False) == "12.35 kJ"
    assert fmt_j(12_345.0, estimated=True) == "12.35 kJ (est.)"
    assert fmt_j(None, estimated=True) == "–", "no energy is not estimated energy"


def test_accuracy_to_four_places_or_a_dash():
    assert (fmt_acc(0.87654), fmt_acc(None)) == ("0.8765", "–")


def test_table_has_a_header_a_rule_and_one_line_per_row():
    assert table(["a", "b"], [[1, 2], ["x", None]]).splitlines() == [
        "| a | b |",
        "|---|---|",
        "| 1 | 2 |",
        "| x | None |",
    ]


def test_only_keys_that_differ_are_shown_in_their_fixed_order():
    rows = [
        trial(1, 0.8, 1, params={"lr": "0.1", "epochs": "5", "conv_layers": "2"}),
        trial(2, 0.8, 1, params={"lr": "0.01", "epochs": "5", "conv_layers": "3"}),
    ]
    keys = varying_keys(rows)
    assert keys == ["conv_layers", "lr"]
    assert config_of(rows[0], keys) == "conv_layers=2, lr=0.1"
    assert config_of(rows[0], []) == "(same as the others)"


def test_short_numbers_keep_whole_numbers_and_never_round_a_range_top_to_one():
    assert short_number("512") == "512" and short_number("relu") == "relu"
    assert short_number("0.0012345678") == "0.001235"
    assert short_number("0.9999999999999999") == "0.9999999999999999"
    assert short_number("1.0") == "1"
