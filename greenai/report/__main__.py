"""`python -m greenai.report`: report.md and PNG figures from an MLflow experiment or sweep."""

from __future__ import annotations

import logging
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from greenai.errors import GreenAIError, command_line_errors, fail
from greenai.report import runs as run_reader
from greenai.report.document import build
from greenai.report.run_cache import CACHE_FILE, Reading
from greenai.report.settings import EnergyBasis, ReportConfig, ReportOptions, check
from greenai.stores import tracking
from greenai.stores.health import check_store
from greenai.stores.run_rows import GROSS, NET
from greenai.stores.url import StoreURL

log = logging.getLogger("greenai.report")
CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")


ConfigStore.instance().store(name="report_schema", node=ReportConfig, replace=True)


def report(cfg: DictConfig) -> Path:
    options: ReportOptions = OmegaConf.to_object(cfg.report)  # type: ignore[assignment]
    check(options)
    launch_dir = HydraConfig.get().runtime.cwd
    store = StoreURL.tracking(cfg.tracking.uri, launch_dir)
    if store.kind == "sqlite" and store.path is not None and not store.path.is_file():
        raise GreenAIError(
            f"tracking.uri={cfg.tracking.uri}: no MLflow store there (run a sweep first, or point at yours)"
        )
    check_store(store, "tracking.uri")  # a damaged or foreign file: one line, not a traceback
    mlflow = tracking.client(store)
    metric = NET if options.energy is EnergyBasis.net else GROSS
    out = Path(launch_dir) / options.out_dir
    cache = out / CACHE_FILE if options.cache else None
    runs = run_reader.load(mlflow, cfg.tracking.experiment, options.sweep, metric, cache)
    log.info("%s", reading_line(runs.reading, cache))
    title = f"{runs.experiment}" + (f", sweep {runs.sweeps[0].name}" if options.sweep else "")
    result = build(runs, options, out, title)
    if options.sweep:
        parent = runs.sweeps[0].run_id
        for path in [out / "report.md", *result.figures]:
            mlflow.log_artifact(parent, str(path), artifact_path="report")
    for line in result.summary:
        log.info(line)
    log.info(
        "report written to %s (%d figures)%s",
        out / "report.md",
        len(result.figures),
        f", and logged to sweep run {runs.sweeps[0].run_id}" if options.sweep else "",
    )
    return out


def reading_line(reading: Reading, cache: Path | None) -> str:
    """How the runs were read: all of them from MLflow, or what changed since the last report."""
    if reading.full:
        return f"{reading.fetched} runs read from MLflow" + (f" (kept in {cache} for the next report)" if cache else "")
    return (
        f"{reading.cached} runs from the report's cache, {reading.fetched} read from MLflow (new, open or ended "
        f"since the last report), {reading.dropped} left out (deleted)"
    )


@hydra.main(config_path=CONF_DIR, config_name="report")
def hydra_main(cfg: DictConfig) -> None:
    try:
        report(cfg)
    except GreenAIError as exc:
        fail(str(exc))


def main() -> None:
    """`python -m greenai.report` / `greenai-report`."""
    with command_line_errors():
        hydra_main()


if __name__ == "__main__":
    main()
