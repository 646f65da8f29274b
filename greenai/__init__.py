"""greenai: energy as a first-class metric of deep-learning training."""

from typing import Any

__version__ = "0.1.0"

# The public API for a user's own loop (greenai.api), imported on first use: `import greenai.names`
# stays cheap for every module that needs only greenai's vocabulary.
_API = ("Trial", "TrialPruned", "TRUSTED_TARGETS", "command_line_errors")


def __getattr__(name: str) -> Any:
    if name in _API:
        from greenai import api

        return getattr(api, name)
    raise AttributeError(f"module 'greenai' has no attribute {name!r}")
