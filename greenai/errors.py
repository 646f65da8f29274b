"""Errors greenai reports as one line: bad input the user can fix."""

from __future__ import annotations

import sys
from typing import NoReturn

EXIT_BAD_INPUT = 2


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit with status 2 (SystemExit passes through Hydra)."""
    print(f"greenai: error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


class GreenAIError(Exception):
    """Input greenai refuses; the message is one line naming the key and what is allowed."""


class ConfigError(GreenAIError, ValueError):
    def __init__(self, key: str, value: object, allowed: str) -> None:
        super().__init__(f"{key}={value}: {allowed}")
        self.key = key
        self.value = value


class DatasetError(GreenAIError):
    """Dataset files missing, truncated or corrupt, or nowhere to get them from."""


class EnergyError(GreenAIError):
    """An energy backend that was asked for cannot measure on this machine."""
