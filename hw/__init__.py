"""Amaranth generator of the systolic-conv accelerator."""

from .config import HardwareConfig, DEFAULT
from .faults import FAULTS

__all__ = ["HardwareConfig", "DEFAULT", "FAULTS"]
