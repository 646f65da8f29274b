"""The report's writer: the head, the summary, and the sections assembled into report.md."""

from __future__ import annotations

from report_rows import run_set, sweep, trial

from greenai.report import document
from greenai.report.sections import EnergyLabel, Section
from greenai.report.settings import EnergyBasis, ReportSettings


def layered_runs():
    rows = [
        trial(1, 0.80, 100.0, parent="s", conv=1),
        trial(2, 0.90, 300.0, parent="s", conv=2),
        trial(3, 0.895, 120.0, parent="s", conv=2),
        trial(4, 0.5, 50.0, "pruned", parent="s", conv=1),
        trial(5, None, 20.0, "failed", parent="s", conv=1),
    ]
    return run_set(rows, [sweep("s", "tpe")])


def test_a_report_writes_its_sections_in_order_with_their_figures(tmp_path):
    report = document.build(layered_runs(), ReportSettings(), tmp_path, "my study")
    text = (tmp_path / "report.md").read_text()
    assert text == report.markdown and text.startswith("# greenai report: my study\n")
    headings = [line for line in text.splitlines() if line.startswith("## ")]
    assert headings == [
        "## Summary",
        "## Convergence by searcher (RQ1)",
        "## Accuracy vs energy",
        "## Layer study (RQ2)",
        "## Carbon and cost",
        "## Failed, pruned and killed trials",
    ]
    assert [p.name for p in report.figures] == ["convergence.png", "accuracy_energy.png", "layers.png"]
    assert all(p.is_file() for p in report.figures)
    assert "5 trial runs read: 3 finished, 1 pruned, 1 failed." in text


def test_the_summary_has_at_most_three_numbered_lines_and_is_returned(tmp_path):
    report = document.build(layered_runs(), ReportSettings(), tmp_path)
    assert len(report.summary) == 3  # best/cheapest, searchers, layers: the energy total is the fourth, left out
    assert report.summary[0].startswith("Best accuracy 0.9000 (run2) for 300.0 J; run3 comes within 1 point(s)")
    for i, line in enumerate(report.summary, 1):
        assert f"{i}. {line}" in report.markdown


def test_a_short_summary_ends_with_the_energy_total_and_its_carbon():
    rows = [trial(1, 0.8, 3.6e6)]
    lines = document.summary_lines(rows, [], ReportSettings(grid_g_co2e_per_kwh=100), [])
    assert lines[-1] == "1 trials used 3,600.00 kJ, 100.00 g CO2e at 100 g/kWh."


def test_estimated_or_mixed_energy_is_said_before_any_figure(tmp_path):
    assert document.energy_banner(EnergyLabel(False, False)) == ""
    assert "ESTIMATED" in document.energy_banner(EnergyLabel(True, False))
    assert "mixes measured and estimated" in document.energy_banner(EnergyLabel(True, True))
    rows = [trial(1, 0.8, 10.0, source="estimated"), trial(2, 0.7, 5.0, source="estimated")]
    text = document.build(run_set(rows), ReportSettings(), tmp_path).markdown
    assert text.index("ESTIMATED") < text.index("## Summary") and "10.0 J (est.)" in text


def test_net_energy_is_named_in_the_head(tmp_path):
    gross = document.build(run_set([trial(1, 0.8, 1.0)]), ReportSettings(), tmp_path / "g").markdown
    net = document.build(run_set([trial(1, 0.8, 1.0)]), ReportSettings(energy=EnergyBasis.net), tmp_path / "n").markdown
    assert "Energy figures are **gross**" in gross and "Energy figures are **net** of idle power" in net


def test_skipped_runs_are_listed_in_the_head(tmp_path):
    text = document.build(
        run_set([trial(1, 0.8, 1.0)], skipped=["old (no energy_j: an older greenai)"]), ReportSettings(), tmp_path
    ).markdown
    assert "Skipped in the figures (1): old (no energy_j: an older greenai)." in text.split("## Convergence")[0]


def test_sections_with_nothing_to_say_leave_no_gap():
    text = document.assemble(["# title"], [Section(["## A", "a"]), Section([]), Section(["## B"])])
    assert text == "# title\n\n## A\na\n\n## B\n"


def test_trials_whose_energy_covers_different_devices_are_said_so_before_any_figure(tmp_path):
    rows = [
        trial(1, 0.8, 700.0, tags={"energy_components": "gpu"}),
        trial(2, 0.7, 900.0, tags={"energy_components": "gpu+cpu+dram"}),
        trial(3, 0.75, 720.0, tags={"energy_components": "gpu"}),
    ]
    text = document.build(run_set(rows), ReportSettings(), tmp_path).markdown
    assert "covers different devices**: gpu (2 trials), gpu+cpu+dram (1 trials)" in text
    assert text.index("covers different devices") < text.index("## Summary")
    same = [
        trial(1, 0.8, 700.0, tags={"energy_components": "gpu"}),
        trial(2, 0.7, 710.0, tags={"energy_components": "gpu"}),
    ]
    assert "covers different devices" not in document.build(run_set(same), ReportSettings(), tmp_path / "b").markdown


def test_fused_estimated_energy_is_marked_estimated(tmp_path):
    rows = [trial(1, 0.8, 10.0, source="fused_estimated"), trial(2, 0.7, 5.0, source="fused_estimated")]
    text = document.build(run_set(rows), ReportSettings(), tmp_path).markdown
    assert "ESTIMATED" in text and "10.0 J (est.)" in text
