"""Selective scan (the S6 recurrence of Mamba) with interchangeable backends and mamba-ssm's argument shapes."""
from patchorder.ops.selective_scan import BACKENDS, selective_scan

__all__ = ["selective_scan", "BACKENDS"]
