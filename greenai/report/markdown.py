"""How the report writes numbers, tables and configurations in markdown. Estimated energy is
always written with "(est.)" after it."""

from __future__ import annotations

from collections.abc import Sequence

from greenai.stores.run_rows import TrialRow

# The configuration keys a reader compares trials by, in the order they are listed.
KEY_PARAMS = (
    "model.name",
    "model.arch",
    "model._target_",
    "dataset.name",
    "conv_layers",
    "linear_layers",
    "relu",
    "precision.name",
    "optimizer.name",
    "scheduler.name",
    "dataset.augment",
    "lr",
    "beta1",
    "beta2",
    "eps",
    "weight_decay",
    "epochs",
    "repeats",
)


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
    """The configuration keys whose values differ between the rows: what a reader needs (a
    custom model's own arguments, model.args.*, included)."""
    own = sorted({k for r in rows for k in r.params if k.startswith("model.args.")})
    return [k for k in (*KEY_PARAMS, *own) if len({r.params.get(k) for r in rows}) > 1]


def config_of(row: TrialRow, keys: Sequence[str]) -> str:
    return ", ".join(f"{k}={short_number(row.params[k])}" for k in keys if k in row.params) or "(same as the others)"


def short_number(value: str) -> str:
    """A param as a reader wants it: whole numbers as logged, others to 4 significant digits."""
    try:
        number = float(value)
    except ValueError:
        return value
    if number.is_integer() and "." not in value:
        return value
    short = f"{number:.4g}"
    # 0.9999999999999999 (a half-open range's top) must not read as 1.
    return short if float(short) != round(number) or number.is_integer() else repr(number)
