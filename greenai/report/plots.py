"""The report's figures (matplotlib, no display needed). Each says what it compares in its
title, labels its axes with units, and marks estimated energy "(est.)" as the tables do.
Each figure is built by a `*_figure` function (tests read its axes) and saved by `*_plot`."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: works on machines with no display
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

from greenai.report.analysis import Convergence, Level, factor_value  # noqa: E402
from greenai.stores.run_rows import TrialRow  # noqa: E402

DPI = 120


def energy_axis(what: str, estimated: bool, mixed: bool = False) -> str:
    """An energy axis label: its unit, then whether the energy is measured or estimated."""
    if mixed:
        return f"{what}, J (hollow = est., filled = measured)"
    return f"{what}, J (est.)" if estimated else f"{what}, J (measured)"


def convergence_plot(panels: dict[str, dict[str, Convergence]], path: Path) -> Path:
    return save(convergence_figure(panels), path)


def convergence_figure(panels: dict[str, dict[str, Convergence]]) -> Figure:
    """Best-so-far accuracy by round: one panel per model/dataset/space, one line per searcher."""
    cols = min(3, len(panels))
    rows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(max(7.5, 5.2 * cols), 4.2 * rows), squeeze=False)
    # The grid may hold more axes than panels: the spare ones are switched off below.
    for ax, (title, curves) in zip(axes.flat, panels.items(), strict=False):
        for searcher, conv in sorted(curves.items()):
            xs = [i + 1 for i, v in enumerate(conv.best_so_far) if v is not None]
            ys = [v for v in conv.best_so_far if v is not None]
            line = ax.step(xs, ys, where="post", label=f"{searcher} (best {conv.best:.3f} @ {conv.round_best})")[0]
            ax.plot([conv.round_best], [conv.best], "o", color=line.get_color())
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("round (trial)")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel("best test accuracy so far")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    for ax in list(axes.flat)[len(panels) :]:
        ax.axis("off")
    fig.suptitle("Best accuracy reached after each round, by searcher", fontsize=12)
    return fig


def pareto_plot(
    rows: Sequence[TrialRow],
    front: Sequence[TrialRow],
    path: Path,
    estimated: bool,
    mixed: bool,
    by: str | Sequence[str] = (),
) -> Path:
    return save(pareto_figure(rows, front, estimated, mixed, by), path)


STATE_STYLES = (("pruned", "v", "tab:orange"), ("failed", "x", "tab:red"), ("killed", "x", "tab:gray"))
# The finished trials' levels of what the sweep varied: colours by the first factor (none the
# states or the front use), markers by the second.
LEVEL_COLOURS = ("tab:blue", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "black")
LEVEL_MARKERS = ("o", "s", "^", "D", "P", "*", "h")


def _point_styles(rows: Sequence[TrialRow], by: tuple[str, ...]) -> list[tuple[str, str, str, list[TrialRow]]]:
    """(label, marker, colour, trials) per group of points: each state apart, and the finished
    trials by their levels of `by` (up to two of what the sweep varied: architecture, precision, ...)."""
    drawn = [r for r in rows if r.energy_j is not None and r.accuracy is not None]
    finished = [r for r in drawn if r.state == "finished"]
    levels = [sorted({str(factor_value(r, f)) for r in finished}) for f in by[:2]]
    if any(len(found) > len(LEVEL_COLOURS) for found in levels):  # too many to tell apart
        levels = []
    groups = []
    for combo in itertools.product(*levels) if levels else []:
        members = [r for r in finished if tuple(str(factor_value(r, f)) for f in by[:2]) == combo]
        if members:
            named = ", ".join(f"{f}={level}" for f, level in zip(by, combo, strict=False))
            colour = LEVEL_COLOURS[levels[0].index(combo[0])]
            marker = LEVEL_MARKERS[levels[1].index(combo[1])] if len(combo) > 1 else "o"
            groups.append((f"finished, {named} ({len(members)})", marker, colour, members))
    if not levels:
        groups.append((f"finished ({len(finished)})", "o", "tab:blue", finished))
    for state, marker, colour in STATE_STYLES:
        members = [r for r in drawn if r.state == state]
        groups.append((f"{state} ({len(members)})", marker, colour, members))
    return groups


def pareto_figure(
    rows: Sequence[TrialRow],
    front: Sequence[TrialRow],
    estimated: bool,
    mixed: bool,
    by: str | Sequence[str] = (),
) -> Figure:
    """Every trial as a point (finished, pruned, failed apart; hollow where estimated among
    measured ones; the finished trials coloured, and marked, by their levels of `by`, what the
    sweep varied), the Pareto front drawn."""
    by = (by,) if isinstance(by, str) else tuple(by)
    fig, ax = plt.subplots(figsize=(7.5, 5))
    for label, marker, color, points in _point_styles(rows, by):
        for hollow, group in (
            (False, [r for r in points if not (mixed and r.estimated)]),
            (True, [r for r in points if mixed and r.estimated]),
        ):
            if group:
                face = "none" if hollow and marker != "x" else color
                ax.scatter(
                    [r.energy_j for r in group],
                    [r.accuracy for r in group],
                    marker=marker,
                    facecolors=face,
                    edgecolors=color,
                    alpha=0.8,
                    label=label,
                )
                label = None  # one legend entry per group
    if front:
        ax.plot(
            [r.energy_j for r in front],
            [r.accuracy for r in front],
            "-",
            color="tab:green",
            lw=2,
            label=f"Pareto front ({len(front)})",
        )
    ax.set_xlabel(energy_axis("energy per trial", estimated, mixed))
    ax.set_ylabel("test accuracy")
    title = "Accuracy vs energy: each trial, and the trials no other beats on both"
    ax.set_title(f"{title}\n(finished trials by {' and '.join(by[:2])})" if by else title, fontsize=10 if by else None)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=9, loc="lower right")
    return fig


def layers_plot(tables: dict[str, list[Level]], path: Path, estimated: bool) -> Path:
    return save(layers_figure(tables, estimated), path)


AXIS_NAMES = {"conv_layers": "conv layers", "linear_layers": "linear layers", "relu": "ReLU"}


def layers_figure(tables: dict[str, list[Level]], estimated: bool) -> Figure:
    """Mean energy (bars) and mean accuracy (line) by number of conv / linear / ReLU layers, and
    by whatever else the sweep varied (architecture, precision, a custom model's width, ...)."""
    fig, axes = plt.subplots(1, len(tables), figsize=(max(7.5, 4.8 * len(tables)), 4.0), squeeze=False)
    for ax, (factor, table) in zip(axes.flat, tables.items(), strict=True):
        labels = [("on" if lv.value else "off") if factor == "relu" else str(lv.value) for lv in table]
        positions = list(range(len(table)))  # numeric positions: the counts are labels, not a scale
        spread = [lv.energy_sd for lv in table]
        ax.bar(
            positions,
            [lv.mean_energy for lv in table],
            color="tab:olive",
            alpha=0.7,
            # One standard deviation of a trial's energy, where the runs give one (analysis.energy_spread).
            yerr=[sd or 0.0 for sd in spread] if any(sd is not None for sd in spread) else None,
            capsize=4,
        )
        ax.set_xticks(positions, labels)
        ax.set_xlabel(AXIS_NAMES.get(factor, factor))
        ax.set_ylabel(energy_axis("mean energy per trial", estimated))
        twin = ax.twinx()
        twin.plot(positions, [lv.mean_accuracy for lv in table], "o-", color="tab:blue")
        twin.set_ylabel("mean test accuracy", color="tab:blue")
        ax.set_title(f"by {factor}", fontsize=10)
    what = "layer count" if set(tables) <= set(AXIS_NAMES) else "what the sweep varied"
    spread = any(lv.energy_sd is not None for table in tables.values() for lv in table)
    bars = "energy (bars, ±1 sd)" if spread else "energy (bars)"
    fig.suptitle(f"Layer study: {bars} and accuracy (line) by {what}", fontsize=12)
    return fig


def save(fig: Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path
