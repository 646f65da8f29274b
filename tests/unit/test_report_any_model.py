"""The report on sweeps beyond the paper's models: its layer study and Pareto figure name what
the trials varied (architecture, precision, a custom model's own arguments, counted layers)."""

from __future__ import annotations

from dataclasses import replace

from report_rows import trial

from greenai.report import analysis as an
from greenai.report import plots, sections
from greenai.report.markdown import config_of, varying_keys
from greenai.stores.run_rows import RunRecord, row_from_record


def record(params: dict[str, str]) -> RunRecord:
    return RunRecord("r", "run", "FINISHED", 1, 2, params, {"accuracy": 0.5, "energy_j": 10.0}, {})


def test_rows_of_other_models_take_their_counted_layers_and_name():
    resnet = row_from_record(
        record(
            {"model.name": "torchvision", "model.arch": "resnet18", "arch.conv_layers": "20", "arch.linear_layers": "1"}
        )
    )
    assert (resnet.architecture, resnet.conv_layers, resnet.linear_layers, resnet.relu) == ("resnet18", 20, 1, None)
    own = row_from_record(record({"model.name": "custom", "model._target_": "mynets.Net", "arch.conv_layers": "1"}))
    assert own.architecture == "mynets.Net" and own.conv_layers == 1
    dense = row_from_record(record({"model.name": "densepoly", "conv_layers": "2", "arch.conv_layers": "0"}))
    assert (dense.architecture, dense.conv_layers) == ("densepoly", None), "the paper's rule for its models"


def model_trial(round_, accuracy, energy, arch, precision, width, conv):
    """A torchvision model's trial row, as row_from_record reads it."""
    params = {"model.name": "torchvision", "model.arch": arch, "precision.name": precision}
    params["model.args.width"] = str(width)
    return replace(trial(round_, accuracy, energy, conv=conv, params=params), architecture=arch)


def sweep_over_models():
    return [
        model_trial(1, 0.80, 100.0, "resnet18", "fp32", width=16, conv=20),
        model_trial(2, 0.79, 60.0, "resnet18", "bf16", width=8, conv=20),
        model_trial(3, 0.70, 30.0, "mobilenet_v3_small", "bf16", width=32, conv=52),
        model_trial(4, 0.72, 40.0, "mobilenet_v3_small", "fp32", width=16, conv=52),
    ]


def test_the_study_factors_are_what_the_trials_differ_in():
    rows = sweep_over_models()
    # Counted layers that only restate the architecture are its factor, not their own.
    assert an.study_factors(rows) == ["architecture", "precision", "model.args.width"]
    deeper = [*rows, model_trial(5, 0.81, 120.0, "resnet18", "fp32", width=16, conv=36)]
    assert an.study_factors(deeper) == ["conv_layers", "architecture", "precision", "model.args.width"]
    widths = an.levels(rows, "model.args.width")
    assert [lv.value for lv in widths] == [8, 16, 32], "numbers sort as numbers"
    assert [lv.value for lv in an.levels(rows, "architecture")] == ["mobilenet_v3_small", "resnet18"]


def test_the_layer_study_names_architecture_and_precision(tmp_path):
    found = sections.layers(sweep_over_models(), tmp_path, estimated=False)
    text = "\n".join(found.lines)
    assert "Energy and accuracy by what the trials varied: `architecture`, `precision`, `model.args.width`." in text
    assert "By `architecture`:" in text and "By `precision`:" in text and "By `model.args.width`:" in text
    assert "architecture: resnet18 spends +128.6% energy per trial against mobilenet_v3_small, the least" in text
    assert "precision: fp32 spends +55.6% energy per trial against bf16, the least" in text
    assert found.figures == [tmp_path / "layers.png"]
    fig = plots.layers_figure({f: an.levels(sweep_over_models(), f) for f in ("architecture", "precision")}, False)
    assert fig._suptitle.get_text().endswith("by what the sweep varied")
    assert [ax.get_xlabel() for ax in fig.axes if "energy" in ax.get_ylabel()] == ["architecture", "precision"]


def test_the_pareto_figure_colours_the_trials_by_what_varied(tmp_path):
    rows = sweep_over_models()
    ax = plots.pareto_figure(rows, rows[:1], estimated=False, mixed=False, by="architecture").axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == [
        "finished, architecture=mobilenet_v3_small (2)",
        "finished, architecture=resnet18 (2)",
        "Pareto front (1)",
    ]
    assert "by architecture" in ax.get_title()
    two = plots.pareto_figure(rows, [], estimated=False, mixed=False, by=["architecture", "precision"]).axes[0]
    legend = [t.get_text() for t in two.get_legend().get_texts()]
    assert legend[:2] == [
        "finished, architecture=mobilenet_v3_small, precision=bf16 (1)",
        "finished, architecture=mobilenet_v3_small, precision=fp32 (1)",
    ]
    assert len(legend) == 4 and "by architecture and precision" in two.get_title()
    from greenai.report.settings import ReportSettings

    section = sections.tradeoff(rows, ReportSettings(), tmp_path, sections.EnergyLabel(False, False))
    assert (tmp_path / "accuracy_energy.png").exists()
    keys = varying_keys(rows)
    assert keys == ["model.arch", "precision.name", "model.args.width"]
    assert config_of(rows[0], keys) == "model.arch=resnet18, precision.name=fp32, model.args.width=16"
    assert any("model.arch=mobilenet_v3_small" in line for line in section.lines)
