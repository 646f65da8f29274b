"""The report's sections. Each is a function of the runs that returns what it found: its
markdown, the figures it drew, and the findings the summary may quote. document.py assembles them."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from greenai import names
from greenai.report import analysis as an
from greenai.report import plots
from greenai.report.markdown import config_of, fmt_acc, fmt_j, table, varying_keys
from greenai.report.runs import RunSet, SweepInfo
from greenai.report.settings import ReportSettings
from greenai.stores.run_rows import TrialRow
from greenai.sweep.totals import pareto_front, scored


@dataclass(frozen=True)
class Section:
    """One section: markdown lines (none: the section has nothing to say), figures drawn, and
    one-line findings for the summary."""

    lines: list[str]
    figures: list[Path] = field(default_factory=list)
    findings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class EnergyLabel:
    """How the energy of a set of trials must be labelled."""

    estimated: bool  # some of it is greenai's CPU-time estimate: marked (est.)
    mixed: bool  # measured and estimated figures side by side
    # What the trials' energy covers (energy_components tag -> trials), when it differs between them.
    components: tuple[tuple[str, int], ...] = ()


ESTIMATED_SOURCES = {"estimated", "partial", "fused_estimated"}
MEASURED_SOURCES = {"measured", "attributed", "fused"}


def energy_label(rows: Sequence[TrialRow]) -> EnergyLabel:
    with_energy = [r for r in rows if r.energy_j is not None]
    sources = {r.energy_source for r in with_energy}
    estimated = bool(sources & ESTIMATED_SOURCES)
    covered = Counter(r.tags.get(names.ENERGY_COMPONENTS) for r in with_energy if r.tags.get(names.ENERGY_COMPONENTS))
    components = tuple(sorted(covered.items())) if len(covered) > 1 else ()
    return EnergyLabel(estimated, estimated and bool(sources & MEASURED_SOURCES), components)


# ------------------------------------------------------------------ convergence (RQ1)


@dataclass(frozen=True)
class SweepCurve:
    sweep: SweepInfo
    model: str
    dataset: str
    space: str
    curve: an.Convergence
    estimated: bool


def sweep_curves(runs: RunSet, tolerance: float) -> list[SweepCurve]:
    """How each Optuna-driven sweep converged; plain Hydra sweeps list configurations and do
    not search, so they have no curve."""
    children: dict[str, list[TrialRow]] = defaultdict(list)
    for row in runs.rows:
        if row.parent_id:
            children[row.parent_id].append(row)
    curves = []
    for sweep in runs.sweeps:
        rows = children.get(sweep.run_id, [])
        if sweep.searcher == "hydra-basic" or not rows:
            continue
        curve = an.convergence(rows, tolerance)
        if curve is None:
            continue
        first = rows[0]
        curves.append(
            SweepCurve(
                sweep,
                first.model or "?",
                first.dataset or "?",
                sweep.search_space or "?",
                curve,
                any(r.estimated for r in rows),
            )
        )
    return curves


def convergence(curves: list[SweepCurve], settings: ReportSettings, out: Path) -> Section:
    title = ["## Convergence by searcher (RQ1)", ""]
    if not curves:
        return Section(title + ["No Optuna-driven sweeps in this selection: nothing to compare."])
    tol = settings.tolerance
    rows = [
        [
            c.model,
            c.dataset,
            c.space,
            c.sweep.searcher,
            c.curve.rounds,
            f"{c.curve.best:.4f} ({c.curve.round_best})",
            c.curve.round_within,
            fmt_j(c.curve.energy_to_best, c.estimated),
            fmt_j(c.curve.energy_total, c.estimated),
        ]
        for c in sorted(curves, key=lambda c: (c.model, c.dataset, c.space, c.sweep.searcher))
    ]
    lines = title + [
        table(
            [
                "model",
                "dataset",
                "space",
                "searcher",
                "rounds",
                "best accuracy (round first reached)",
                f"round within {tol:g}",
                "energy up to the best",
                "energy, whole sweep",
            ],
            rows,
        )
    ]
    lines += ["", "In the layout of the paper's Table III (best accuracy, round in brackets):", "", table_iii(curves)]
    figure = plots.convergence_plot(convergence_panels(curves), out / "convergence.png")
    lines += ["", "![Best accuracy so far by round, per searcher](convergence.png)"]
    return Section(lines, [figure])


def table_iii(curves: list[SweepCurve]) -> str:
    """Best accuracy (round first reached) by model and searcher, one column per dataset."""
    datasets = sorted({c.dataset for c in curves})
    cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for c in curves:
        key = (c.model, c.sweep.searcher)
        previous = cells[key].get(c.dataset)
        entry = f"{c.curve.best:.3f} ({c.curve.round_best})"
        cells[key][c.dataset] = entry if previous is None else f"{previous} \\| {entry}"
    body = [[m, s, *(cells[(m, s)].get(d, "–") for d in datasets)] for m, s in sorted(cells)]
    return table(["model", "searcher", *datasets], body)


def convergence_panels(curves: list[SweepCurve]) -> dict[str, dict[str, an.Convergence]]:
    """One panel per model/dataset/space, one curve per searcher (told apart by run name when a
    searcher ran twice)."""
    panels: dict[str, dict[str, an.Convergence]] = defaultdict(dict)
    for c in curves:
        title = f"{c.model} / {c.dataset} / {c.space}"
        name = (
            c.sweep.searcher if c.sweep.searcher not in panels[title] else f"{c.sweep.searcher} ({c.sweep.name[-6:]})"
        )
        panels[title][name] = c.curve
    return dict(panels)


# ------------------------------------------------------------------ accuracy vs energy


def pareto_rows(rows: Sequence[TrialRow]) -> list[TrialRow]:
    done = scored(rows)
    return [done[i] for i in pareto_front([(r.accuracy, r.energy_j) for r in done])]


def tradeoff(rows: Sequence[TrialRow], settings: ReportSettings, out: Path, label: EnergyLabel) -> Section:
    front = pareto_rows(rows)
    # Beyond the paper's layer counts, the figure tells the trials apart by the first two other
    # things they differ in (architecture, precision, optimiser, ...): what a sweep over models varied.
    by = [f for f in an.study_factors(rows) if f not in an.LAYER_FACTORS][:2]
    figure = plots.pareto_plot(rows, front, out / "accuracy_energy.png", label.estimated, label.mixed, by)
    lines = [
        "## Accuracy vs energy",
        "",
        "![Accuracy against energy for every trial, with the Pareto front](accuracy_energy.png)",
        "",
    ]
    lines.append(f"Pareto front ({len(front)} trials no other trial beats on both accuracy and energy):")
    keys = varying_keys(rows)
    lines += [
        "",
        table(
            ["run", "round", "accuracy", "energy", "config (what varies)"],
            [
                [r.name, r.round or "–", fmt_acc(r.accuracy), fmt_j(r.energy_j, r.estimated), config_of(r, keys)]
                for r in front
            ],
        ),
    ]
    pair = an.cheapest_within(rows, settings.accuracy_margin)
    if pair:
        best, cheap = pair
        lines += [
            "",
            f"- Most accurate: **{best.name}**, accuracy {best.accuracy:.4f}, "
            f"{fmt_j(best.energy_j, best.estimated)} ({config_of(best, keys)}).",
        ]
        ratio = best.energy_j / cheap.energy_j if cheap.energy_j else float("inf")
        lines.append(
            f"- Cheapest within {settings.accuracy_margin * 100:g} point(s) of it: **{cheap.name}**, "
            f"accuracy {cheap.accuracy:.4f}, {fmt_j(cheap.energy_j, cheap.estimated)}, {ratio:.2f}x less energy "
            f"({config_of(cheap, keys)})."
        )
    return Section(lines, [figure])


# ------------------------------------------------------------------ layer study (RQ2)


def layers(rows: Sequence[TrialRow], out: Path, estimated: bool) -> Section:
    """The layer study, where the runs vary layer counts or anything else a sweep over models
    varies (the architecture, precision, optimiser, schedule, a custom model's own arguments);
    its findings are the energy change per added layer of each type, and for the other
    factors, the cheapest level against the dearest."""
    tables = {f: an.levels(rows, f) for f in an.study_factors(rows)}
    varying = {f: t for f, t in tables.items() if len(t) >= 2}
    if not varying:
        return Section([])
    lines = ["## Layer study (RQ2)", ""]
    if set(varying) - set(an.LAYER_FACTORS):  # a sweep over more than the paper's layer counts
        lines += [f"Energy and accuracy by what the trials varied: {', '.join(f'`{f}`' for f in varying)}.", ""]
    findings, effects = [], []
    for factor, levels in varying.items():
        lines += [f"By `{factor}`:", "", levels_table(levels, estimated), ""]
        findings.append(
            per_layer_finding(factor, levels) if factor in an.LAYER_FACTORS else level_finding(factor, levels)
        )
        eta_e = an.eta_squared(an.factor_groups(rows, factor, lambda r: r.energy_j))
        eta_a = an.eta_squared(an.factor_groups(rows, factor, lambda r: r.accuracy))
        effects.append([factor, "–" if eta_e is None else f"{eta_e:.3f}", "–" if eta_a is None else f"{eta_a:.3f}"])
    lines += [findings_intro(set(varying)), ""]
    lines += [f"- {f}" for f in findings]
    lines += [
        "",
        "Effect size (one-way η², share of the variance explained by the factor alone):",
        "",
        table(["factor", "η² energy", "η² accuracy"], effects),
    ]
    if "conv_layers" in varying:
        lines += ["", *table_v(varying["conv_layers"], estimated)]
    figure = plots.layers_plot(varying, out / "layers.png", estimated)
    lines += ["", "![Energy and accuracy by layer count](layers.png)"]
    return Section(lines, [figure], findings)


def levels_table(levels: list[an.Level], estimated: bool) -> str:
    """One line per level; with a column for the spread of a trial's energy where the runs give one
    (across its repeats, or across the level's trials: an.energy_spread), so that a reader sees
    whether a step between levels stands out of the noise."""
    header = ["level", "trials", "mean accuracy", "max accuracy", "mean energy per trial"]
    body = [
        [lv.value, lv.count, fmt_acc(lv.mean_accuracy), fmt_acc(lv.max_accuracy), fmt_j(lv.mean_energy, estimated)]
        for lv in levels
    ]
    if any(lv.energy_sd is not None for lv in levels):
        header.append("energy ±1 sd (from)")
        for row, lv in zip(body, levels, strict=True):
            row.append("–" if lv.energy_sd is None else f"± {fmt_j(lv.energy_sd, estimated)} ({lv.energy_sd_from})")
    return table(header, body)


def per_layer_finding(factor: str, levels: list[an.Level]) -> str:
    per_layer = an.percent_per_added_layer(levels)
    total = an.percent_change(levels[0].mean_energy, levels[-1].mean_energy)
    span = "ReLU off → on" if factor == "relu" else f"{levels[0].value} → {levels[-1].value}"
    return f"{factor}: {per_layer:+.1f}% energy per added layer ({span}: {total:+.1f}%)"


def findings_intro(factors: set[str]) -> str:
    layered = "Energy change per added layer of each type (the paper's Table V, last lines)"
    others = "the cheapest against the dearest level of each other factor"
    if not factors - set(an.LAYER_FACTORS):
        return f"{layered}:"
    if not factors & set(an.LAYER_FACTORS):
        return "The cheapest against the dearest level of each factor:"
    return f"{layered}, and {others}:"


def level_finding(factor: str, levels: list[an.Level]) -> str:
    """A factor without an order (architecture, precision, ...): its cheapest level against its dearest."""
    cheap = min(levels, key=lambda lv: lv.mean_energy)
    dear = max(levels, key=lambda lv: lv.mean_energy)
    more = an.percent_change(cheap.mean_energy, dear.mean_energy)
    return (
        f"{factor}: {dear.value} spends {more:+.1f}% energy per trial against {cheap.value}, the least "
        f"(mean accuracy {fmt_acc(dear.mean_accuracy)} against {fmt_acc(cheap.mean_accuracy)})"
    )


def table_v(conv: list[an.Level], estimated: bool) -> list[str]:
    """More (E+) against fewer (E-) conv layers, pooled, as in the paper's Table V."""
    plus, minus = an.split_energy(conv)
    e_p, a_p, m_p = an.pooled(plus)
    e_m, a_m, m_m = an.pooled(minus)
    more, fewer = ", ".join(str(lv.value) for lv in plus), ", ".join(str(lv.value) for lv in minus)
    return [
        f"More (E+: conv {more}) against fewer (E-: conv {fewer}) conv layers, as in Table V:",
        "",
        table(
            ["", "E+", "E-"],
            [
                ["mean energy per training", fmt_j(e_p, estimated), fmt_j(e_m, estimated)],
                ["mean accuracy", fmt_acc(a_p), fmt_acc(a_m)],
                ["max accuracy", fmt_acc(m_p), fmt_acc(m_m)],
            ],
        ),
    ]


# ------------------------------------------------------------------ carbon, failures


def carbon(rows: Sequence[TrialRow], curves: list[SweepCurve], settings: ReportSettings, estimated: bool) -> Section:
    g = settings.grid_g_co2e_per_kwh
    scopes = [("all trials in this report", sum(r.energy_j or 0.0 for r in rows))]
    scopes += [(f"sweep {c.sweep.name} ({c.sweep.searcher})", c.curve.energy_total) for c in curves]
    header = ["scope", "energy", "kWh", "g CO2e"]
    if settings.price_per_kwh is not None:
        header.append(f"cost ({settings.currency})")
    body = []
    for name, joules in scopes:
        row = [name, fmt_j(joules, estimated), f"{an.kwh(joules):.6f}", f"{an.grams_co2e(joules, g):.3f}"]
        if settings.price_per_kwh is not None:
            row.append(f"{an.kwh(joules) * settings.price_per_kwh:.6f}")
        body.append(row)
    return Section(
        [
            "## Carbon and cost",
            "",
            f"At a grid intensity of {g:g} g CO2e/kWh (`report.grid_g_co2e_per_kwh`; default: the 2023 world "
            "average of electricity generation, Ember, Global Electricity Review 2024). Energy is the trials' "
            "own; the machines' idle and cooling overheads are not included.",
            "",
            table(header, body),
        ]
    )


LEDGER_SOURCE = "energy_ledger_source"  # greenai.names.LEDGER_SOURCE, on the sweep's run


def ledger(sweeps: Sequence[SweepInfo]) -> Section:
    """Each sweep's energy ledger: its counters' total against its trials, greenai's overhead
    and the idle time between trials (an estimate: power x time), and what remains unexplained."""
    kept = [s for s in sweeps if "ledger_trials_j" in s.metrics]
    if not kept:
        return Section([])
    body, findings = [], []
    for s in kept:
        m = s.metrics
        share = m.get("ledger_unexplained_pct")
        total = m.get("ledger_total_j")
        body.append(
            [
                s.name,
                fmt_j(total, False) if total is not None else "no counter (estimated)",
                fmt_j(m["ledger_trials_j"], False),
                fmt_j(m.get("ledger_overhead_j"), False),
                fmt_j(m.get("ledger_idle_j"), True),
                "–" if share is None else f"{fmt_j(m.get('ledger_unexplained_j'), False)} ({share:+.2f} %)",
            ]
        )
        if share is not None and abs(share) > 1.0:
            findings.append(f"Sweep {s.name}: {share:+.2f} % of its counters' energy is unexplained by its parts.")
    return Section(
        [
            "## Energy ledger",
            "",
            "Each sweep's counters, read by the sweeping process alone from its start to its end, against "
            "what its parts say they drew: its trials' gross energy, greenai's own overhead (trials' start-up "
            "and close, the sweeper's work) and the time nothing covered at the idle (or context) power, "
            "which is estimated (est.). The remainder is unexplained.",
            "",
            table(["sweep", "counters' total", "trials", "overhead", "idle between", "unexplained"], body),
        ],
        findings=findings,
    )


def incidents(rows: Sequence[TrialRow]) -> Section:
    odd = [r for r in rows if r.state in ("failed", "pruned", "killed", "running")]
    if not odd:
        return Section([])
    body = [
        [r.name, r.round or "–", r.state, fmt_acc(r.accuracy), fmt_j(r.energy_j, r.estimated), reason(r)] for r in odd
    ]
    return Section(
        [
            "## Failed, pruned and killed trials",
            "",
            "Their energy counts in every total above.",
            "",
            table(["run", "round", "state", "accuracy", "energy spent", "reason"], body),
        ]
    )


def reason(row: TrialRow) -> str:
    if row.state == "pruned":
        return f"stopped after {int(row.metrics.get('epochs_run', 0))} epochs"
    return row.tags.get(names.FAILURE_REASON, "")
