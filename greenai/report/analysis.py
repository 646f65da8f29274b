"""Analysis as pure functions over rows and plain numbers: no MLflow, no training code."""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from greenai.stores.run_rows import TrialRow
from greenai.sweep.totals import by_round, scored

JOULES_PER_KWH = 3.6e6


def best_so_far(values: Sequence[float | None]) -> list[float | None]:
    """Running maximum, round by round; None until the first value."""
    running: list[float | None] = []
    best: float | None = None
    for value in values:
        if value is not None and (best is None or value > best):
            best = value
        running.append(best)
    return running


def first_round_reaching(values: Sequence[float | None], target: float, tolerance: float = 0.0) -> int | None:
    """1-based round at which `values` first came within `tolerance` of `target`."""
    for round_number, value in enumerate(values, start=1):
        if value is not None and value >= target - tolerance:
            return round_number
    return None


@dataclass(frozen=True)
class Convergence:
    """How one sweep approached its best accuracy, round by round."""

    rounds: int
    best_so_far: list[float | None]
    energy_so_far: list[float]
    best: float
    round_best: int
    round_within: int
    tolerance: float

    @property
    def energy_to_best(self) -> float:
        return self.energy_so_far[self.round_best - 1]

    @property
    def energy_to_within(self) -> float:
        return self.energy_so_far[self.round_within - 1]

    @property
    def energy_total(self) -> float:
        return self.energy_so_far[-1] if self.energy_so_far else 0.0


def convergence(rows: Sequence[TrialRow], tolerance: float) -> Convergence | None:
    """Best-so-far accuracy of finished trials by round; energy of every trial (failed and
    pruned ones spent it too) accumulated by round. None if no trial finished."""
    ordered = by_round(rows)
    accuracy = [r.accuracy if r.state == "finished" else None for r in ordered]
    running = best_so_far(accuracy)
    best = running[-1] if running else None
    if best is None:
        return None
    spent, total = [], 0.0
    for row in ordered:
        total += row.energy_j or 0.0
        spent.append(total)
    round_best = first_round_reaching(accuracy, best)
    round_within = first_round_reaching(accuracy, best, tolerance)
    assert round_best is not None and round_within is not None
    return Convergence(len(ordered), running, spent, best, round_best, round_within, tolerance)


def cheapest_within(rows: Sequence[TrialRow], margin: float) -> tuple[TrialRow, TrialRow] | None:
    """(most accurate finished trial, cheapest finished trial within `margin` accuracy of it)."""
    done = scored(rows)
    if not done:
        return None
    best = max(done, key=lambda r: (r.accuracy, -r.energy_j))
    near = [r for r in done if r.accuracy >= best.accuracy - margin]
    return best, min(near, key=lambda r: (r.energy_j, -r.accuracy))


# ------------------------------------------------------------------ layer study (RQ2)

# The paper's layer counts: configured for its models, counted from the module for others.
LAYER_FACTORS: dict[str, Callable[[TrialRow], object]] = {
    "conv_layers": lambda r: r.conv_layers,
    "linear_layers": lambda r: r.linear_layers,
    "relu": lambda r: r.relu,
}
# What else a sweep may vary, by the param that records it. A custom model's own arguments
# (model.args.depth, model.args.width, ...) are factors too, found in the params.
PARAM_FACTORS = {
    "precision": "precision.name",
    "optimizer": "optimizer.name",
    "scheduler": "scheduler.name",
    "augment": "dataset.augment",
}


def _plain(value: str | None) -> object:
    """A param as a level: a number where it reads as one (so levels sort as numbers)."""
    if value is None:
        return None
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            continue
    return value


def factor_value(row: TrialRow, factor: str) -> object:
    """The row's level of `factor` (None where the row has no such level)."""
    if factor in LAYER_FACTORS:
        return LAYER_FACTORS[factor](row)
    if factor == "architecture":
        return row.architecture
    return _plain(row.params.get(PARAM_FACTORS.get(factor, factor)))


def study_factors(rows: Sequence[TrialRow]) -> list[str]:
    """What the finished trials differ in, of what the layer study compares: the layer counts,
    the architecture, the training knobs, a custom model's own arguments."""
    done = scored(rows)
    own = sorted({k for r in done for k in r.params if k.startswith("model.args.")})
    candidates = [*LAYER_FACTORS, "architecture", *PARAM_FACTORS, *own]
    varied = [f for f in candidates if len({factor_value(r, f) for r in done} - {None}) >= 2]
    # Layer counts that only restate the architecture (resnet18's 20 convolutions against
    # mobilenet's 52) are the architecture's factor, not one of their own.
    if "architecture" in varied:
        by_architecture = _partition(done, "architecture")
        varied = [f for f in varied if f not in LAYER_FACTORS or _partition(done, f) != by_architecture]
    return varied


def _partition(rows: Sequence[TrialRow], factor: str) -> set[frozenset[str]]:
    """The trials grouped by their level of `factor`, as sets of run ids."""
    groups: dict[object, set[str]] = defaultdict(set)
    for row in rows:
        groups[factor_value(row, factor)].add(row.run_id)
    return {frozenset(group) for group in groups.values()}


def _level_order(value: object) -> tuple[int, object]:
    """Numbers (and False before True) ascending, then names alphabetically."""
    return (0, value) if isinstance(value, (int, float)) else (1, str(value))


@dataclass(frozen=True)
class Level:
    value: object
    count: int
    mean_accuracy: float
    max_accuracy: float
    mean_energy: float
    # The spread of one trial's energy at the level (one standard deviation), and what it was
    # read from: "repeats" (the trials' energy_j_std) or "seeds" (their energies); None: unknown.
    energy_sd: float | None = None
    energy_sd_from: str | None = None


# Params in which trials of one configuration differ: their seed, and which trial of the study.
SEED_PARAMS = ("seed", "sweep.trial_number")


def energy_spread(group: Sequence[TrialRow]) -> tuple[float | None, str | None]:
    """One trial's energy spread at a level (one standard deviation), and what it was read from:
    - "repeats", where every trial of the level recorded `energy_j_std` (a trial's energy sums its
      R repeats, so its sd is sqrt(R) x the repeats' sd; pooled over the trials as a root mean
      square);
    - "seeds", where the level's trials are one configuration run with several seeds (their params
      equal but for SEED_PARAMS): the sample standard deviation of their energies;
    - none otherwise: the trials of a level that differ in more than their seed (the other layer
      counts of a grid) spread by what they vary, which is no measure of noise."""
    spreads = [(r.metrics.get("energy_j_std"), r.metrics.get("repeats_run") or 1.0) for r in group]
    if spreads and all(sd is not None for sd, _ in spreads):
        return math.sqrt(statistics.fmean(repeats * sd * sd for sd, repeats in spreads)), "repeats"
    if len({r.params.get("seed") for r in group} - {None}) >= 2:
        configs = {tuple(sorted((k, v) for k, v in r.params.items() if k not in SEED_PARAMS)) for r in group}
        if len(configs) == 1:
            return statistics.stdev(r.energy_j for r in group), "seeds"
    return None, None


def levels(rows: Sequence[TrialRow], factor: str) -> list[Level]:
    """Per level of a factor (finished trials with accuracy and energy): count, mean and max
    accuracy, mean energy and its spread (energy_spread); levels in ascending order (False before True for relu, names
    alphabetically)."""
    groups: dict[object, list[TrialRow]] = defaultdict(list)
    for row in scored(rows):
        value = factor_value(row, factor)
        if value is not None:
            groups[value].append(row)
    return [
        Level(
            value,
            len(group),
            statistics.fmean(r.accuracy for r in group),
            max(r.accuracy for r in group),
            statistics.fmean(r.energy_j for r in group),
            *energy_spread(group),
        )
        for value, group in sorted(groups.items(), key=lambda kv: _level_order(kv[0]))
    ]


def percent_change(low: float, high: float) -> float:
    return (high - low) / low * 100.0


def percent_per_added_layer(table: Sequence[Level]) -> float | None:
    """Energy change from the fewest to the most layers, in % of the fewest, per added layer:
    (E(max) - E(min)) / E(min) / (max - min) x 100. None with fewer than two levels."""
    if len(table) < 2:
        return None
    low, high = table[0], table[-1]
    steps = int(high.value) - int(low.value)  # relu: True - False = 1
    return percent_change(low.mean_energy, high.mean_energy) / steps


def eta_squared(groups: Sequence[Sequence[float]]) -> float | None:
    """One-way effect size: between-group sum of squares over total sum of squares.
    None where the design does not allow it (fewer than two groups, or no variance)."""
    groups = [list(g) for g in groups if g]
    values = [v for g in groups for v in g]
    # Two levels at least, and some level with repeated trials: with one trial per level
    # every value is its own group mean, and eta squared is 1 by construction.
    if len(groups) < 2 or len(values) <= len(groups):
        return None
    grand = statistics.fmean(values)
    total = sum((v - grand) ** 2 for v in values)
    if total == 0:
        return None
    between = sum(len(g) * (statistics.fmean(g) - grand) ** 2 for g in groups)
    return between / total


def factor_groups(
    rows: Sequence[TrialRow], factor: str, metric: Callable[[TrialRow], float | None]
) -> list[list[float]]:
    groups: dict[object, list[float]] = defaultdict(list)
    for row in rows:
        value, level = metric(row), factor_value(row, factor)
        if level is not None and value is not None and row.state == "finished":
            groups[level].append(value)
    return [groups[k] for k in sorted(groups, key=_level_order)]


def split_energy(table: Sequence[Level]) -> tuple[list[Level], list[Level]]:
    """The paper's Table V: levels with more layers (E+) against fewer (E-), split in half."""
    half = len(table) // 2
    return list(table[len(table) - half :]), list(table[:half])


def pooled(levels_: Sequence[Level]) -> tuple[float, float, float]:
    """(mean energy, mean accuracy, max accuracy) over several levels, weighted by count."""
    count = sum(lv.count for lv in levels_)
    energy = sum(lv.mean_energy * lv.count for lv in levels_) / count
    accuracy = sum(lv.mean_accuracy * lv.count for lv in levels_) / count
    return energy, accuracy, max(lv.max_accuracy for lv in levels_)


# ------------------------------------------------------------------ carbon and cost


def kwh(joules: float) -> float:
    return joules / JOULES_PER_KWH


def grams_co2e(joules: float, grams_per_kwh: float) -> float:
    return kwh(joules) * grams_per_kwh
