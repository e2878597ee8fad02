"""Figures derived the same way for a measured layer (:class:`~.driver.RtlStats`)
and an estimated one (:class:`~.cycle_model.Estimate`), DESIGN section 7:
utilization is MACs over ``rows*cols*cycles``; traffic is the bytes streamed over
the tensors' own bytes."""

__all__ = ["LayerFigures"]


class LayerFigures:
    """Mixin for a dataclass with ``cycles``, ``macs``, ``bytes`` (per stream),
    ``tensor_bytes`` and ``pes`` (processing elements of the array)."""

    @property
    def utilization(self):
        return self.macs / (self.pes * self.cycles) if self.cycles else 0.0

    @property
    def bytes_total(self):
        return sum(self.bytes.values())

    @property
    def traffic_ratio(self):
        return self.bytes_total / self.tensor_bytes if self.tensor_bytes else 0.0

    def latency_us(self, clock_mhz):
        """Microseconds at ``clock_mhz``."""
        return self.cycles / clock_mhz

    def gmacs(self, clock_mhz):
        """Throughput in GMAC/s at ``clock_mhz``."""
        return self.macs / self.cycles * clock_mhz / 1e3 if self.cycles else 0.0
