"""The accelerator's blocks by name: what ``systolic-conv synth --block NAME``
synthesizes alone, and what the per-block resource table lists."""

from .config import HardwareConfig

__all__ = ["blocks", "make_block"]


def _blocks():
    from .control import Control
    from .params import ParamStore
    from .weights import WeightStore, WeightLoader
    from .linebuffer import LineBuffer
    from .sequencer import Sequencer
    from .dense_seq import DenseSequencer
    from .dw_seq import DepthwiseSequencer
    from .fetch import ElementFetch
    from .rowvector import RowVectorLoader
    from .array import SystolicArray
    from .accumulator import Accumulator
    from .requant import Requantizer
    from .output import ResultPacker, ResultQueue
    from .counters import PerfCounters
    from .accel import Conv2dAccelerator
    return {
        "control": (Control, "descriptor checks, layer figures, run control, status"),
        "params": (ParamStore, "tile parameter intake and memories"),
        "weight_store": (WeightStore, "weight intake and memory"),
        "weight_loader": (WeightLoader, "weight tiles / tap weights into the array"),
        "line_buffer": (LineBuffer, "activation intake, row slots, read port"),
        "sequencer": (Sequencer, "both loop nests and the result credits"),
        "dense_sequencer": (DenseSequencer, "the dense loop nest"),
        "dw_sequencer": (DepthwiseSequencer, "the depthwise reads and taps"),
        "fetch": (ElementFetch, "dense element words from the line buffer"),
        "row_vector": (RowVectorLoader, "depthwise row vectors (shadow and shift register)"),
        "array": (SystolicArray, "the processing elements with their row skew"),
        "accumulator": (Accumulator, "fold sums, bias, depthwise drain"),
        "requantizer": (Requantizer, "tflite / half_up requantization, clamp"),
        "packer": (ResultPacker, "results packed into beats"),
        "queue": (ResultQueue, "the result FIFO and credit return"),
        "counters": (lambda cfg: PerfCounters(), "performance counters"),
        "accelerator": (Conv2dAccelerator, "the whole accelerator"),
    }


_CACHE = {}


def blocks():
    """``{name: (constructor taking a HardwareConfig, what it is)}``."""
    if not _CACHE:
        _CACHE.update(_blocks())
    return _CACHE


def make_block(name, cfg: HardwareConfig):
    """A fresh instance of block ``name`` for ``cfg``."""
    table = blocks()
    if name not in table:
        raise ValueError(f"block={name!r} must be one of {', '.join(table)}")
    return table[name][0](cfg)
