"""VMamba with pluggable patch orderings.

Importing this package registers the presets with timm (``vmamba_micro``, ``vmamba_tiny_s1l8``,
``vmamba_small_s1l20``), so ``timm.create_model("vmamba_tiny_s1l8", ordering="spiral", num_classes=10)`` works.
"""
from patchorder.models import presets  # noqa: F401  registers the timm models
from patchorder.models.capture import capture_ssm, scan_ablation
from patchorder.models.official import OfficialCheckpointError, load_official_vmamba
from patchorder.models.records import SSMRecord
from patchorder.models.ss2d import SS2D, cross_merge, cross_scan
from patchorder.models.vmamba import VMamba, VSSBlock

__all__ = [
    "VMamba", "VSSBlock", "SS2D", "cross_scan", "cross_merge",
    "capture_ssm", "scan_ablation", "SSMRecord",
    "load_official_vmamba", "OfficialCheckpointError",
]
