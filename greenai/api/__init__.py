"""greenai's public API for a user's own Hydra app and training loop (docs/your-own-loop.md):
`greenai.Trial` around a loop of its own, `greenai.api.lightning.TrialCallback` for a Lightning
Trainer. The API layer sits above the sweep layer; nothing in greenai imports it."""

from optuna import TrialPruned

from greenai.api.trial import TRUSTED_TARGETS, Trial
from greenai.errors import command_line_errors

__all__ = ["TRUSTED_TARGETS", "Trial", "TrialPruned", "command_line_errors"]
