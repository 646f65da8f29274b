"""The report's writer: the sections assembled under a title, the energy banner and a summary of
at most three lines, written as report.md beside the figures the sections drew."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from greenai.report import analysis as an
from greenai.report import sections
from greenai.report.markdown import fmt_j
from greenai.report.runs import RunSet
from greenai.report.sections import EnergyLabel, Section, SweepCurve
from greenai.report.settings import EnergyBasis, ReportSettings
from greenai.stores.run_rows import TrialRow

STATES = ("finished", "pruned", "failed", "killed", "running")


@dataclass(frozen=True)
class Report:
    markdown: str
    summary: list[str]
    figures: list[Path]


def energy_banner(label: EnergyLabel) -> str:
    """What a reader must know before any figure: some energy is estimated, mixed, or covers
    different devices from run to run."""
    covers = ""
    if label.components:
        kinds = ", ".join(f"{kind} ({count} trials)" for kind, count in label.components)
        covers = (
            f"> **These trials' energy covers different devices**: {kinds} (the `energy_components` tag). "
            "Totals that add them up mix what was measured; compare trials of one kind with each other.\n\n"
        )
    return covers + _source_banner(label)


def _source_banner(label: EnergyLabel) -> str:
    if label.mixed:
        return (
            "> **This report mixes measured and estimated energy.** Figures marked (est.) come from greenai's "
            "CPU-time estimate, not from hardware counters; do not compare them with measured ones as equals."
        )
    if label.estimated:
        return (
            "> **Energy in this report is ESTIMATED** (no hardware counter was readable: CPU-seconds x watts per "
            "core), marked (est.) throughout. Use it to compare trials with each other, not as joules on a meter."
        )
    return ""


def energy_basis(energy: EnergyBasis) -> str:
    if energy is EnergyBasis.net:
        return "Energy figures are **net** of idle power (gross minus idle power x time, `report.energy=net`)."
    return (
        "Energy figures are **gross**: everything the measured devices drew during training and evaluation "
        "(`report.energy=net` subtracts idle power)."
    )


def summary_lines(
    rows: Sequence[TrialRow], curves: list[SweepCurve], settings: ReportSettings, findings: list[str]
) -> list[str]:
    """The main findings, in at most three lines."""
    lines = []
    pair = an.cheapest_within(rows, settings.accuracy_margin)
    if pair:
        best, cheap = pair
        margin = f"{settings.accuracy_margin * 100:g} point(s)"
        cheaper = (
            f"{cheap.name} comes within {margin} ({cheap.accuracy:.4f}) for {fmt_j(cheap.energy_j, cheap.estimated)}"
            if cheap is not best
            else f"no trial within {margin} of it is cheaper"
        )
        lines.append(
            f"Best accuracy {best.accuracy:.4f} ({best.name}) for {fmt_j(best.energy_j, best.estimated)}; {cheaper}."
        )
    if curves:
        lines.append(searchers_line(curves, settings.tolerance))
    if findings:
        lines.append("Layers: " + "; ".join(findings) + ".")
    total = sum(r.energy_j or 0.0 for r in rows)
    estimated = any(r.estimated for r in rows)
    lines.append(
        f"{len(rows)} trials used {fmt_j(total, estimated)}, "
        f"{an.grams_co2e(total, settings.grid_g_co2e_per_kwh):.2f} g CO2e at {settings.grid_g_co2e_per_kwh:g} g/kWh."
    )
    return lines[:3]


def searchers_line(curves: list[SweepCurve], tolerance: float) -> str:
    fastest = min(curves, key=lambda c: (c.curve.round_within, c.curve.energy_to_within))
    best = max(curves, key=lambda c: c.curve.best)
    to_within, total = fastest.curve.energy_to_within, fastest.curve.energy_total
    spent = f"{fmt_j(to_within, fastest.estimated)} of {fmt_j(total, fastest.estimated)}"
    return (
        f"Of {len(curves)} sweep(s), {best.sweep.searcher} found the best ({best.curve.best:.4f}, round "
        f"{best.curve.round_best}); {fastest.sweep.searcher} came within {tolerance:g} of its own best soonest "
        f"(round {fastest.curve.round_within} of {fastest.curve.rounds}, {spent})."
    )


def head(runs: RunSet, settings: ReportSettings, title: str, banner: str, summary: list[str]) -> list[str]:
    """Title, banner, energy basis, summary, and how many runs were read or skipped."""
    counts = {s: sum(1 for r in runs.rows if r.state == s) for s in STATES}
    lines = [f"# greenai report: {title or runs.experiment}", ""]
    if banner:
        lines += [banner, ""]
    lines += [energy_basis(settings.energy), ""]
    lines += ["## Summary", ""] + [f"{i}. {line}" for i, line in enumerate(summary, 1)] + [""]
    lines.append(f"{len(runs.rows)} trial runs read: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + ".")
    if runs.skipped:
        lines += ["", f"Skipped in the figures ({len(runs.skipped)}): " + "; ".join(runs.skipped) + "."]
    return lines


def assemble(top: list[str], found: Sequence[Section]) -> str:
    """The head, then each section that has something to say, a blank line between them."""
    lines = list(top)
    for section in found:
        if section.lines:
            lines += ["", *section.lines]
    return "\n".join(lines) + "\n"


def build(runs: RunSet, settings: ReportSettings, out: Path, title: str = "") -> Report:
    """Draw the figures into `out` and write `out/report.md`."""
    out.mkdir(parents=True, exist_ok=True)
    rows = runs.rows
    label = sections.energy_label(rows)
    curves = sections.sweep_curves(runs, settings.tolerance)
    found = [
        sections.convergence(curves, settings, out),
        sections.tradeoff(rows, settings, out, label),
        sections.layers(rows, out, label.estimated),
        sections.carbon(rows, curves, settings, label.estimated),
        sections.ledger(runs.sweeps),
        sections.incidents(rows),
    ]
    summary = summary_lines(rows, curves, settings, [f for s in found for f in s.findings])
    markdown = assemble(head(runs, settings, title, energy_banner(label), summary), found)
    (out / "report.md").write_text(markdown)
    return Report(markdown, summary, [f for s in found for f in s.figures])
