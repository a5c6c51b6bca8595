"""patchorder: VMamba with pluggable patch orderings, trained with Lightning + Hydra, with exact attention analysis."""

__version__ = "0.1.0"
