"""Noise shown, not hidden (issue 21): a trial of several repeats records the spread of their
energies (`energy_j_std`, as `accuracy_std` is for accuracy), and the report's layer study draws
it as intervals, so a reader sees whether a step between layer counts stands out of the noise."""

from __future__ import annotations

import statistics

import pytest
from report_rows import trial as row
from store_readers import mlflow_runs, trial_runs
from trials_in_memory import memory_data, trial

from greenai.energy.meters import Measurement, Source
from greenai.report import analysis as an
from greenai.report import plots, sections
from greenai.trial.outcome import Finished
from greenai.trial.runner import run_alone, run_fused


class CountingMeter:
    """The n-th window of the process reads n joules: each repeat spends more than the last."""

    source = Source.measured
    description = "fake: window n reads n J"
    components = "gpu"

    def __init__(self) -> None:
        self.ended = 0

    def begin(self, name: str) -> None:
        pass

    def end(self, name: str) -> Measurement:
        self.ended += 1
        return Measurement(1.0, float(self.ended), None, Source.measured)

    def cancel(self, name: str) -> None:
        pass


def test_a_trials_repeats_give_the_spread_of_their_energies():
    run = trial(CountingMeter(), memory_data(), repeats=3, warmup_steps=0)
    assert isinstance(run_alone(run), Finished)
    # Each repeat's windows, in order: its model's set-up, training, evaluation, records.
    each = [sum(range(4 * r + 1, 4 * r + 5)) for r in range(3)]
    figures = run.record.figures.metrics()
    assert figures["energy_j"] == sum(each)
    assert figures["energy_j_std"] == pytest.approx(statistics.pstdev(each))
    assert figures["accuracy_std"] is not None


def test_one_repeat_has_no_spread():
    run = trial(CountingMeter(), memory_data(), warmup_steps=0)
    run_alone(run)
    assert run.record.figures.metrics()["energy_j_std"] is None


def test_fused_repeats_share_every_window_so_no_spread_is_claimed():
    """Members of a fused group get equal shares of each window: their energies are equal by
    construction, and a zero would claim a precision no measurement gave."""
    run = trial(CountingMeter(), memory_data(), repeats=3, warmup_steps=0)
    (outcome,) = run_fused([run])
    assert isinstance(outcome, Finished)
    figures = run.record.figures.metrics()
    assert figures["accuracy_std"] is not None and figures["energy_j_std"] is None


def test_the_run_records_it(greenai, tiny):
    greenai(*tiny, "repeats=2", "energy=estimate", "fuse=false", "energy.warmup_steps=0")
    (run,) = trial_runs(mlflow_runs(greenai.cwd))
    assert run.data.metrics["energy_j_std"] >= 0 and run.data.metrics["repeats_run"] == 2
    assert "accuracy_std" in run.data.metrics


# ---------------------------------------------------------------- the report draws it


def rows_with_spread() -> list:
    def one(round_, conv, energy, sd):
        return row(round_, 0.8, energy, conv=conv, linear=3, metrics={"energy_j_std": sd, "repeats_run": 4.0})

    return [one(1, 1, 100.0, 5.0), one(2, 1, 110.0, 5.0), one(3, 2, 150.0, 10.0)]


def test_a_level_takes_its_spread_from_the_repeats_or_from_seeds():
    (low, high) = an.levels(rows_with_spread(), "conv_layers")
    assert (low.energy_sd, low.energy_sd_from) == (pytest.approx(10.0), "repeats")  # sqrt(4) x 5 J
    assert high.energy_sd == pytest.approx(20.0)
    seeds = [row(i, 0.8, j, conv=1, params={"seed": str(i), "conv_layers": "1"}) for i, j in ((1, 90.0), (2, 110.0))]
    (level,) = an.levels(seeds, "conv_layers")
    assert (level.energy_sd, level.energy_sd_from) == (pytest.approx(statistics.stdev([90.0, 110.0])), "seeds")


def test_trials_of_other_configurations_are_no_measure_of_noise():
    grid = [
        row(i, 0.8, j, conv=1, params={"seed": str(i), "linear_layers": str(i)}) for i, j in ((1, 90.0), (2, 200.0))
    ]
    (level,) = an.levels(grid, "conv_layers")
    assert level.energy_sd is None and level.energy_sd_from is None


def test_the_layer_study_draws_intervals_where_the_runs_give_them(tmp_path):
    found = sections.layers(rows_with_spread(), tmp_path, estimated=False)
    text = "\n".join(found.lines)
    assert "energy ±1 sd (from)" in text
    assert "| 1 | 2 | 0.8000 | 0.8000 | 105.0 J | ± 10.0 J (repeats) |" in text
    fig = plots.layers_figure({"conv_layers": an.levels(rows_with_spread(), "conv_layers")}, estimated=False)
    (bars,) = [c for c in fig.axes[0].containers if hasattr(c, "errorbar")]
    assert bars.errorbar is not None, "the bars carry error bars"
    (_, _, (segments,)) = bars.errorbar.lines
    heights = sorted(abs(s[1][1] - s[0][1]) / 2 for s in segments.get_segments())
    assert heights == pytest.approx([10.0, 20.0])
    assert "±1 sd" in fig._suptitle.get_text()


def test_without_a_spread_the_figure_and_table_are_as_before(tmp_path):
    rows = [row(1, 0.8, 100.0, conv=1, linear=3), row(2, 0.85, 150.0, conv=3, linear=3)]
    text = "\n".join(sections.layers(rows, tmp_path, estimated=False).lines)
    assert "±1 sd" not in text
    fig = plots.layers_figure({"conv_layers": an.levels(rows, "conv_layers")}, estimated=False)
    assert all(getattr(c, "errorbar", None) is None for c in fig.axes[0].containers)
