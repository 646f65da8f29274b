"""Each section of the report, alone: what it finds, what it writes, which figure it draws."""

from __future__ import annotations

from report_rows import run_set, sweep, trial

from greenai.report import sections
from greenai.report.settings import ReportSettings


def test_energy_label_is_estimated_or_mixed_from_the_trials_with_energy():
    assert sections.energy_label([trial(1, 0.8, 1.0)]) == sections.EnergyLabel(False, False)
    assert sections.energy_label([trial(1, 0.8, 1.0, source="partial")]) == sections.EnergyLabel(True, False)
    mixed = [trial(1, 0.8, 1.0, source="estimated"), trial(2, 0.8, 1.0)]
    assert sections.energy_label(mixed) == sections.EnergyLabel(True, True)
    # a trial without energy does not make the report mixed
    assert sections.energy_label([trial(1, 0.8, None, source="estimated"), trial(2, 0.8, 1.0)]).mixed is False


def test_curves_only_for_searching_sweeps_with_a_finished_trial():
    rows = [
        trial(1, 0.7, 5.0, parent="a"),
        trial(2, 0.9, 5.0, parent="a", source="estimated"),
        trial(1, 0.8, 5.0, parent="plain"),
        trial(1, None, 5.0, "failed", parent="b"),
    ]
    sweeps = [sweep("a"), sweep("plain", searcher="hydra-basic"), sweep("b"), sweep("empty")]
    curves = sections.sweep_curves(run_set(rows, sweeps), tolerance=0.0)
    assert [c.sweep.run_id for c in curves] == ["a"]
    assert (curves[0].curve.best, curves[0].curve.round_best, curves[0].estimated) == (0.9, 2, True)


def test_convergence_without_sweeps_says_so_and_draws_nothing(tmp_path):
    found = sections.convergence([], ReportSettings(), tmp_path)
    assert found.figures == [] and "nothing to compare" in found.lines[-1]


def test_convergence_tabulates_each_sweep_and_draws_its_curve(tmp_path):
    rows = [trial(1, 0.7, 5.0, parent="a"), trial(2, 0.9, 6.0, parent="a"), trial(1, 0.8, 1.0, parent="b")]
    curves = sections.sweep_curves(run_set(rows, [sweep("a", "tpe"), sweep("b", "random")]), tolerance=0.0)
    found = sections.convergence(curves, ReportSettings(), tmp_path)
    text = "\n".join(found.lines)
    assert "| simplecnn | fashion_mnist | lr | tpe | 2 | 0.9000 (2) | 2 | 11.0 J | 11.0 J |" in text
    assert "| simplecnn | random | 0.800 (1) |" in text  # the Table III layout, one column per dataset
    assert found.figures == [tmp_path / "convergence.png"] and found.figures[0].is_file()


def test_tradeoff_lists_the_pareto_front_and_the_cheapest_trial_near_the_best(tmp_path):
    rows = [
        trial(1, 0.90, 100.0, params={"lr": "0.1"}),
        trial(2, 0.895, 40.0, params={"lr": "0.01"}),
        trial(3, 0.80, 60.0, params={"lr": "0.2"}),
        trial(4, 0.99, 1.0, "pruned", params={"lr": "1"}),
    ]
    found = sections.tradeoff(rows, ReportSettings(accuracy_margin=0.01), tmp_path, sections.EnergyLabel(False, False))
    text = "\n".join(found.lines)
    assert "Pareto front (2 trials" in text and "| run3 |" not in text and "| run4 |" not in text
    assert "Cheapest within 1 point(s) of it: **run2**, accuracy 0.8950, 40.0 J, 2.50x less energy (lr=0.01)" in text
    assert found.figures == [tmp_path / "accuracy_energy.png"]


def test_layers_say_nothing_where_no_layer_count_varies(tmp_path):
    found = sections.layers([trial(1, 0.8, 10.0, conv=2), trial(2, 0.7, 12.0, conv=2)], tmp_path, estimated=False)
    assert found == sections.Section([]) and not (tmp_path / "layers.png").exists()


def test_layers_find_the_energy_change_per_added_layer(tmp_path):
    rows = [
        trial(1, 0.8, 100.0, conv=1, linear=3),
        trial(2, 0.8, 110.0, conv=1, linear=3),
        trial(3, 0.85, 150.0, conv=3, linear=3),
    ]
    found = sections.layers(rows, tmp_path, estimated=True)
    assert found.findings == ["conv_layers: +21.4% energy per added layer (1 → 3: +42.9%)"]
    text = "\n".join(found.lines)
    assert "| 1 | 2 | 0.8000 | 0.8000 | 105.0 J (est.) |" in text
    assert "More (E+: conv 3) against fewer (E-: conv 1) conv layers" in text
    assert found.figures == [tmp_path / "layers.png"]


def test_carbon_has_a_cost_column_only_with_a_price():
    rows = [trial(1, 0.8, 3.6e6), trial(2, None, 3.6e6, "failed")]
    plain = "\n".join(sections.carbon(rows, [], ReportSettings(grid_g_co2e_per_kwh=100), estimated=False).lines)
    priced = "\n".join(
        sections.carbon(rows, [], ReportSettings(price_per_kwh=0.5, currency="CHF"), estimated=False).lines
    )
    assert "| all trials in this report | 7,200.00 kJ | 2.000000 | 200.000 |" in plain and "cost (" not in plain
    assert "| scope | energy | kWh | g CO2e | cost (CHF) |" in priced and "| 1.000000 |" in priced


def test_incidents_list_what_did_not_finish_and_why():
    rows = [
        trial(1, 0.8, 1.0),
        trial(2, 0.5, 2.0, "pruned", metrics={"epochs_run": 3.0}),
        trial(3, None, 4.0, "failed", tags={"greenai.failure_reason": "ValueError: loss is NaN"}),
    ]
    text = "\n".join(sections.incidents(rows).lines)
    assert "| run2 | 2 | pruned | 0.5000 | 2.0 J | stopped after 3 epochs |" in text
    assert "| run3 | 3 | failed | – | 4.0 J | ValueError: loss is NaN |" in text and "| run1 |" not in text
    assert sections.incidents(rows[:1]) == sections.Section([])


def test_the_energy_ledger_section_shows_each_sweeps_unexplained_remainder():
    closed = sweep("a")
    closed.metrics.update(
        {
            "ledger_total_j": 10_000.0,
            "ledger_trials_j": 9_000.0,
            "ledger_overhead_j": 500.0,
            "ledger_idle_j": 300.0,
            "ledger_unexplained_j": 200.0,
            "ledger_unexplained_pct": 2.0,
        }
    )
    estimated = sweep("b")
    estimated.metrics.update({"ledger_trials_j": 50.0, "ledger_overhead_j": 5.0, "ledger_idle_j": 0.0})
    section = sections.ledger([closed, estimated, sweep("c")])
    text = "\n".join(section.lines)
    assert "| sweep-a | 10.00 kJ | 9,000.0 J | 500.0 J | 300.0 J (est.) | 200.0 J (+2.00 %) |" in text
    assert "| sweep-b | no counter (estimated) |" in text and "sweep-c" not in text
    assert section.findings == ["Sweep sweep-a: +2.00 % of its counters' energy is unexplained by its parts."]
    assert sections.ledger([sweep("c")]).lines == [], "no ledger, no section"
