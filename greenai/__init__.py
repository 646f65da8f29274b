"""greenai: energy as a first-class metric of deep-learning training."""

__version__ = "0.1.0"
