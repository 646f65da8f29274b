"""The report's figures: files that decode, and axes that say what is estimated."""

from __future__ import annotations

import matplotlib.image as mpimg
import pytest
from report_rows import trial

from greenai.report import analysis as an
from greenai.report import plots


def curve(best_so_far: list[float]) -> an.Convergence:
    return an.Convergence(
        len(best_so_far),
        best_so_far,
        [10.0] * len(best_so_far),
        max(best_so_far),
        best_so_far.index(max(best_so_far)) + 1,
        1,
        0.01,
    )


def layer_tables() -> dict[str, list[an.Level]]:
    return {
        "conv_layers": [an.Level(1, 2, 0.8, 0.82, 100.0), an.Level(3, 1, 0.85, 0.85, 180.0)],
        "relu": [an.Level(False, 1, 0.7, 0.7, 90.0), an.Level(True, 1, 0.8, 0.8, 95.0)],
    }


def energy_axes(fig) -> list[str]:
    return [ax.get_xlabel() for ax in fig.axes if "energy" in ax.get_xlabel()] + [
        ax.get_ylabel() for ax in fig.axes if "energy" in ax.get_ylabel()
    ]


@pytest.mark.parametrize(
    ("estimated", "mixed", "says"),
    [(True, False, "J (est.)"), (False, False, "J (measured)"), (True, True, "hollow = est., filled = measured")],
)
def test_energy_axes_say_whether_energy_was_estimated(estimated, mixed, says):
    rows = [trial(1, 0.8, 10.0, source="estimated" if estimated else "measured"), trial(2, 0.7, 5.0)]
    pareto = plots.pareto_figure(rows, rows[::-1], estimated, mixed)
    layers = plots.layers_figure(layer_tables(), estimated)
    labels = energy_axes(pareto) + energy_axes(layers)
    assert len(labels) == 3, labels  # the scatter's x axis, and each layer panel's bars
    assert all(("est.)" in label or "= est." in label) == estimated for label in labels), labels
    assert says in labels[0]


def test_mixed_energy_draws_estimated_trials_hollow():
    rows = [trial(1, 0.8, 10.0, source="estimated"), trial(2, 0.7, 5.0, source="measured")]
    ax = plots.pareto_figure(rows, [], estimated=True, mixed=True).axes[0]
    filled = sorted(len(c.get_facecolors()) for c in ax.collections)
    assert filled == [0, 1], "one hollow point (estimated), one filled (measured)"


def test_scatter_counts_each_state_apart_and_draws_the_front():
    rows = [
        trial(1, 0.8, 10.0),
        trial(2, 0.7, 5.0),
        trial(3, 0.6, 4.0, "pruned"),
        trial(4, 0.1, 2.0, "failed"),
        trial(5, None, 3.0, "killed"),
    ]
    ax = plots.pareto_figure(rows, rows[:2], estimated=False, mixed=False).axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    # the killed trial has no accuracy to place: it is not drawn, and has no legend entry
    assert legend == ["finished (2)", "pruned (1)", "failed (1)", "Pareto front (2)"]


def test_convergence_has_one_panel_per_group_and_hides_unused_ones():
    panels = {f"model{i} / ds / space": {"tpe": curve([0.5, 0.7]), "random": curve([0.6, 0.6])} for i in range(4)}
    fig = plots.convergence_figure(panels)
    shown = [ax for ax in fig.axes if ax.axison]
    assert len(fig.axes) == 6 and len(shown) == 4  # three columns: two rows, two empty panels switched off
    assert [ax.get_title() for ax in shown] == list(panels)
    assert {t.get_text() for t in shown[0].get_legend().get_texts()} == {
        "tpe (best 0.700 @ 2)",
        "random (best 0.600 @ 1)",
    }


def test_layer_counts_are_tick_labels_and_relu_reads_off_on():
    fig = plots.layers_figure(layer_tables(), estimated=False)
    bars = [ax for ax in fig.axes if "energy" in ax.get_ylabel()]
    assert [[t.get_text() for t in ax.get_xticklabels()] for ax in bars] == [["1", "3"], ["off", "on"]]


def test_each_plot_writes_a_png_that_decodes(tmp_path):
    rows = [trial(1, 0.8, 10.0), trial(2, 0.7, 5.0)]
    written = [
        plots.convergence_plot({"a / b / c": {"tpe": curve([0.5, 0.7])}}, tmp_path / "c.png"),
        plots.pareto_plot(rows, rows, tmp_path / "p.png", estimated=False, mixed=False),
        plots.layers_plot(layer_tables(), tmp_path / "l.png", estimated=True),
    ]
    assert written == [tmp_path / "c.png", tmp_path / "p.png", tmp_path / "l.png"]
    for path in written:
        height, width = mpimg.imread(path).shape[:2]
        assert height >= 300 and width >= 600, (path.name, height, width)
