"""The report: analysis of a RunSet turned into report.md and its PNG figures."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from greenai.report import analysis as an
from greenai.report import plots
from greenai.report.runs import RunSet, SweepInfo
from greenai.run_rows import TrialRow
from greenai.sweep_totals import pareto_front, scored

# Ember, Global Electricity Review 2024: world average carbon intensity of electricity
# generation in 2023, life-cycle emissions in CO2 equivalent.
DEFAULT_G_CO2E_PER_KWH = 480.0
KEY_PARAMS = ("model.name", "dataset.name", "conv_layers", "linear_layers", "relu", "lr", "beta1", "beta2", "eps", "weight_decay", "epochs", "repeats")


@dataclass
class ReportSettings:
    """How the report reads the runs; `report.*` in conf/report.yaml (see there for each)."""

    tolerance: float = 0.005
    accuracy_margin: float = 0.01
    grid_g_co2e_per_kwh: float = DEFAULT_G_CO2E_PER_KWH
    price_per_kwh: float | None = None
    currency: str = "EUR"
    # gross: all the devices drew; net: minus idle power x time (needs measured idle power).
    energy: str = "gross"


@dataclass
class Report:
    markdown: str
    summary: list[str]
    figures: list[Path] = field(default_factory=list)


def fmt_j(joules: float | None, estimated: bool) -> str:
    if joules is None:
        return "–"
    text = f"{joules / 1000:,.2f} kJ" if joules >= 10_000 else f"{joules:,.1f} J"
    return f"{text} (est.)" if estimated else text


def fmt_acc(value: float | None) -> str:
    return "–" if value is None else f"{value:.4f}"


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def varying_keys(rows: Sequence[TrialRow]) -> list[str]:
    """The configuration keys whose values differ between the rows: what a reader needs."""
    return [k for k in KEY_PARAMS if len({r.params.get(k) for r in rows}) > 1]


def config_of(row: TrialRow, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={_short(row.params[k])}" for k in keys if k in row.params) or "(same as the others)"


def _short(value: str) -> str:
    try:
        number = float(value)
    except ValueError:
        return value
    if number.is_integer() and "." not in value:
        return value
    short = f"{number:.4g}"
    # 0.9999999999999999 (a half-open range's top) must not read as 1.
    return short if float(short) != round(number) or number.is_integer() else repr(number)


# ------------------------------------------------------------------ convergence


@dataclass(frozen=True)
class SweepCurve:
    sweep: SweepInfo
    model: str
    dataset: str
    space: str
    curve: an.Convergence
    estimated: bool


def sweep_curves(runs: RunSet, tolerance: float) -> list[SweepCurve]:
    children: dict[str, list[TrialRow]] = defaultdict(list)
    for row in runs.rows:
        if row.parent_id:
            children[row.parent_id].append(row)
    curves = []
    for sweep in runs.sweeps:
        rows = children.get(sweep.run_id, [])
        if sweep.searcher == "hydra-basic" or not rows:
            continue  # a plain Hydra sweep lists configurations; it does not search
        curve = an.convergence(rows, tolerance)
        if curve is None:
            continue
        first = rows[0]
        curves.append(SweepCurve(sweep, first.model or "?", first.dataset or "?", sweep.search_space or "?", curve, any(r.estimated for r in rows)))
    return curves


def convergence_section(curves: list[SweepCurve], settings: ReportSettings, out: Path, report: Report) -> list[str]:
    if not curves:
        return ["## Convergence by searcher (RQ1)", "", "No Optuna-driven sweeps in this selection: nothing to compare."]
    tol = settings.tolerance
    lines = ["## Convergence by searcher (RQ1)", ""]
    rows = [
        [c.model, c.dataset, c.space, c.sweep.searcher, c.curve.rounds, f"{c.curve.best:.4f} ({c.curve.round_best})",
         c.curve.round_within, fmt_j(c.curve.energy_to_best, c.estimated), fmt_j(c.curve.energy_total, c.estimated)]
        for c in sorted(curves, key=lambda c: (c.model, c.dataset, c.space, c.sweep.searcher))
    ]
    lines.append(table(["model", "dataset", "space", "searcher", "rounds", "best accuracy (round first reached)",
                        f"round within {tol:g}", "energy up to the best", "energy, whole sweep"], rows))
    lines += ["", "In the layout of the paper's Table III (best accuracy, round in brackets):", ""]
    datasets = sorted({c.dataset for c in curves})
    cells: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for c in curves:
        key = (c.model, c.sweep.searcher)
        previous = cells[key].get(c.dataset)
        entry = f"{c.curve.best:.3f} ({c.curve.round_best})"
        cells[key][c.dataset] = entry if previous is None else f"{previous} \\| {entry}"
    lines.append(table(["model", "searcher", *datasets], [[m, s, *(cells[(m, s)].get(d, "–") for d in datasets)] for m, s in sorted(cells)]))
    panels: dict[str, dict[str, an.Convergence]] = defaultdict(dict)
    for c in curves:
        title = f"{c.model} / {c.dataset} / {c.space}"
        name = c.sweep.searcher if c.sweep.searcher not in panels[title] else f"{c.sweep.searcher} ({c.sweep.name[-6:]})"
        panels[title][name] = c.curve
    report.figures.append(plots.convergence_plot(dict(panels), out / "convergence.png"))
    lines += ["", "![Best accuracy so far by round, per searcher](convergence.png)"]
    return lines


# ------------------------------------------------------------------ accuracy vs energy


def pareto_rows(rows: Sequence[TrialRow]) -> list[TrialRow]:
    done = scored(rows)
    return [done[i] for i in pareto_front([(r.accuracy, r.energy_j) for r in done])]


def tradeoff_section(rows: Sequence[TrialRow], settings: ReportSettings, out: Path, report: Report, estimated: bool, mixed: bool) -> list[str]:
    lines = ["## Accuracy vs energy", ""]
    front = pareto_rows(rows)
    report.figures.append(plots.pareto_plot(rows, front, out / "accuracy_energy.png", estimated, mixed))
    lines += ["![Accuracy against energy for every trial, with the Pareto front](accuracy_energy.png)", ""]
    lines.append(f"Pareto front ({len(front)} trials no other trial beats on both accuracy and energy):")
    keys = varying_keys(rows)
    lines += ["", table(["run", "round", "accuracy", "energy", "config (what varies)"],
                        [[r.name, r.round or "–", fmt_acc(r.accuracy), fmt_j(r.energy_j, r.estimated), config_of(r, keys)] for r in front])]
    pair = an.cheapest_within(rows, settings.accuracy_margin)
    if pair:
        best, cheap = pair
        lines += ["", f"- Most accurate: **{best.name}**, accuracy {best.accuracy:.4f}, {fmt_j(best.energy_j, best.estimated)} ({config_of(best, keys)})."]
        ratio = best.energy_j / cheap.energy_j if cheap.energy_j else float("inf")
        lines.append(f"- Cheapest within {settings.accuracy_margin * 100:g} point(s) of it: **{cheap.name}**, accuracy {cheap.accuracy:.4f}, "
                     f"{fmt_j(cheap.energy_j, cheap.estimated)}, {ratio:.2f}x less energy ({config_of(cheap, keys)}).")
    return lines


# ------------------------------------------------------------------ layer study


def layer_section(rows: Sequence[TrialRow], out: Path, report: Report, estimated: bool) -> tuple[list[str], list[str]]:
    """The layer study where the runs vary layer counts; also its summary finding, if any."""
    tables = {f: an.levels(rows, f) for f in an.LAYER_FACTORS}
    varying = {f: t for f, t in tables.items() if len(t) >= 2}
    if not varying:
        return [], []
    lines = ["## Layer study (RQ2)", ""]
    findings, effects = [], []
    for factor, levels in varying.items():
        lines += [f"By `{factor}`:", "", table(["level", "trials", "mean accuracy", "max accuracy", "mean energy per trial"],
                  [[lv.value, lv.count, fmt_acc(lv.mean_accuracy), fmt_acc(lv.max_accuracy), fmt_j(lv.mean_energy, estimated)] for lv in levels]), ""]
        per_layer = an.percent_per_added_layer(levels)
        total = an.percent_change(levels[0].mean_energy, levels[-1].mean_energy)
        span = "ReLU off → on" if factor == "relu" else f"{levels[0].value} → {levels[-1].value}"
        findings.append(f"{factor}: {per_layer:+.1f}% energy per added layer ({span}: {total:+.1f}%)")
        eta_e = an.eta_squared(an.factor_groups(rows, factor, lambda r: r.energy_j))
        eta_a = an.eta_squared(an.factor_groups(rows, factor, lambda r: r.accuracy))
        effects.append([factor, "–" if eta_e is None else f"{eta_e:.3f}", "–" if eta_a is None else f"{eta_a:.3f}"])
    lines += ["Energy change per added layer of each type (the paper's Table V, last lines):", ""]
    lines += [f"- {f}" for f in findings]
    lines += ["", "Effect size (one-way η², share of the variance explained by the factor alone):", "",
              table(["factor", "η² energy", "η² accuracy"], effects)]
    conv = varying.get("conv_layers")
    if conv:
        plus, minus = an.split_energy(conv)
        e_p, a_p, m_p = an.pooled(plus)
        e_m, a_m, m_m = an.pooled(minus)
        lines += ["", f"More (E+: conv {', '.join(str(lv.value) for lv in plus)}) against fewer (E-: conv {', '.join(str(lv.value) for lv in minus)}) conv layers, as in Table V:", "",
                  table(["", "E+", "E-"], [["mean energy per training", fmt_j(e_p, estimated), fmt_j(e_m, estimated)],
                                           ["mean accuracy", fmt_acc(a_p), fmt_acc(a_m)], ["max accuracy", fmt_acc(m_p), fmt_acc(m_m)]])]
    report.figures.append(plots.layers_plot(varying, out / "layers.png", estimated))
    lines += ["", "![Energy and accuracy by layer count](layers.png)"]
    return lines, findings


# ------------------------------------------------------------------ carbon, failures


def carbon_section(rows: Sequence[TrialRow], curves: list[SweepCurve], settings: ReportSettings, estimated: bool) -> list[str]:
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
    return ["## Carbon and cost", "",
            f"At a grid intensity of {g:g} g CO2e/kWh (`report.grid_g_co2e_per_kwh`; default: the 2023 world average "
            "of electricity generation, Ember, Global Electricity Review 2024). Energy is the trials' own; "
            "the machines' idle and cooling overheads are not included.", "", table(header, body)]


def incidents_section(rows: Sequence[TrialRow]) -> list[str]:
    odd = [r for r in rows if r.state in ("failed", "pruned", "killed", "running")]
    if not odd:
        return []
    body = [[r.name, r.round or "–", r.state, fmt_acc(r.accuracy), fmt_j(r.energy_j, r.estimated),
             r.tags.get("greenai.failure_reason", "") if r.state != "pruned" else f"stopped after {int(r.metrics.get('epochs_run', 0))} epochs"]
            for r in odd]
    return ["## Failed, pruned and killed trials", "", "Their energy counts in every total above.", "",
            table(["run", "round", "state", "accuracy", "energy spent", "reason"], body)]


# ------------------------------------------------------------------ the whole document


def energy_banner(rows: Sequence[TrialRow]) -> tuple[str, bool, bool]:
    sources = {r.energy_source for r in rows if r.energy_j is not None}
    estimated = bool(sources & {"estimated", "partial"})
    mixed = estimated and "measured" in sources
    if mixed:
        return ("> **This report mixes measured and estimated energy.** Figures marked (est.) come from greenai's "
                "CPU-time estimate, not from hardware counters; do not compare them with measured ones as equals."), True, True
    if estimated:
        return ("> **Energy in this report is ESTIMATED** (no hardware counter was readable: CPU-seconds x watts per "
                "core), marked (est.) throughout. Use it to compare trials with each other, not as joules on a meter."), True, False
    return "", False, False


def summary_lines(rows: Sequence[TrialRow], curves: list[SweepCurve], settings: ReportSettings, findings: list[str]) -> list[str]:
    lines = []
    pair = an.cheapest_within(rows, settings.accuracy_margin)
    if pair:
        best, cheap = pair
        margin = f"{settings.accuracy_margin * 100:g} point(s)"
        cheaper = (f"{cheap.name} comes within {margin} ({cheap.accuracy:.4f}) for {fmt_j(cheap.energy_j, cheap.estimated)}"
                   if cheap is not best else f"no trial within {margin} of it is cheaper")
        lines.append(f"Best accuracy {best.accuracy:.4f} ({best.name}) for {fmt_j(best.energy_j, best.estimated)}; {cheaper}.")
    if curves:
        fastest = min(curves, key=lambda c: (c.curve.round_within, c.curve.energy_to_within))
        best_curve = max(curves, key=lambda c: c.curve.best)
        lines.append(f"Of {len(curves)} sweep(s), {best_curve.sweep.searcher} found the best ({best_curve.curve.best:.4f}, round {best_curve.curve.round_best}); "
                     f"{fastest.sweep.searcher} came within {settings.tolerance:g} of its own best soonest (round {fastest.curve.round_within} of "
                     f"{fastest.curve.rounds}, {fmt_j(fastest.curve.energy_to_within, fastest.estimated)} of {fmt_j(fastest.curve.energy_total, fastest.estimated)}).")
    if findings:
        lines.append("Layers: " + "; ".join(findings) + ".")
    total = sum(r.energy_j or 0.0 for r in rows)
    estimated = any(r.estimated for r in rows)
    lines.append(f"{len(rows)} trials used {fmt_j(total, estimated)}, {an.grams_co2e(total, settings.grid_g_co2e_per_kwh):.2f} g CO2e "
                 f"at {settings.grid_g_co2e_per_kwh:g} g/kWh.")
    return lines[:3] if len(lines) > 3 else lines


def build(runs: RunSet, settings: ReportSettings, out: Path, title: str = "") -> Report:
    out.mkdir(parents=True, exist_ok=True)
    report = Report(markdown="", summary=[])
    rows = runs.rows
    banner, estimated, mixed = energy_banner(rows)
    curves = sweep_curves(runs, settings.tolerance)
    body = convergence_section(curves, settings, out, report)
    body += [""] + tradeoff_section(rows, settings, out, report, estimated, mixed)
    layers, findings = layer_section(rows, out, report, estimated)
    body += ([""] + layers) if layers else []
    body += [""] + carbon_section(rows, curves, settings, estimated)
    incidents = incidents_section(rows)
    body += ([""] + incidents) if incidents else []
    report.summary = summary_lines(rows, curves, settings, findings)
    counts = {s: sum(1 for r in rows if r.state == s) for s in ("finished", "pruned", "failed", "killed", "running")}
    head = [f"# greenai report: {title or runs.experiment}", ""]
    if banner:
        head += [banner, ""]
    head += ["Energy figures are **net** of idle power (gross minus idle power x time, `report.energy=net`)." if settings.energy == "net"
             else "Energy figures are **gross**: everything the measured devices drew during training and evaluation (`report.energy=net` subtracts idle power).", ""]
    head += ["## Summary", ""] + [f"{i}. {line}" for i, line in enumerate(report.summary, 1)] + [""]
    head.append(f"{len(rows)} trial runs read: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".")
    if runs.skipped:
        head += ["", f"Skipped in the figures ({len(runs.skipped)}): " + "; ".join(runs.skipped) + "."]
    report.markdown = "\n".join(head + [""] + body) + "\n"
    (out / "report.md").write_text(report.markdown)
    return report
