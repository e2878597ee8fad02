"""Stream protocol checkers (pure Python, fed one sample per clock cycle).

The rules of ``amaranth.lib.stream`` (``docs/stdlib/stream.rst``) as seen on the
wires, checked on every stream of the DUT in every test:

* once a producer raises ``valid`` it holds it until the beat is accepted
  (``valid & ready`` at a clock edge);
* the payload does not change while ``valid`` is held and the beat is not accepted;
* the payload of an offered beat has no X/Z bits (Icarus);
* :class:`FramingChecker`: ``last`` only on the final beat of an invocation's
  stream, and (for the outputs) one status beat per invocation, after its results.
"""

__all__ = ["ProtocolError", "StreamChecker", "FramingChecker"]


class ProtocolError(AssertionError):
    pass


class StreamChecker:
    """Valid/ready/payload rules of one stream; call :meth:`sample` every cycle."""

    def __init__(self, name, *, producer="DUT"):
        self.name = name
        self.producer = producer
        self.pending = False
        self.held = None
        self.beats = 0
        self.stalled_cycles = 0
        self.errors = []

    def _error(self, cycle, msg):
        e = f"cycle {cycle}: {self.name} ({self.producer} -> ): {msg}"
        self.errors.append(e)
        raise ProtocolError(e)

    def reset(self):
        self.pending = False
        self.held = None

    def sample(self, cycle, valid, ready, payload=None, resolvable=True):
        """``payload`` may be a callable (read only when needed)."""
        if self.pending:
            if not valid:
                self._error(cycle, "valid dropped before the beat was accepted")
            p = payload() if callable(payload) else payload
            if p != self.held:
                self._error(cycle, f"payload changed while stalled: {self.held:#x} -> {p:#x}")
        if valid and not resolvable:
            self._error(cycle, "payload has X/Z bits while valid")
        if valid and ready:
            self.beats += 1
            self.pending = False
        elif valid:
            self.stalled_cycles += 1
            if not self.pending:
                self.held = payload() if callable(payload) else payload
            self.pending = True


class FramingChecker:
    """``last`` framing of the result stream and status ordering, per invocation."""

    def __init__(self, name="o_result/o_status"):
        self.name = name
        self.errors = []
        self.after_last = False

    def _error(self, cycle, msg):
        e = f"cycle {cycle}: {self.name}: {msg}"
        self.errors.append(e)
        raise ProtocolError(e)

    def reset(self):
        self.after_last = False

    def result(self, cycle, last, expected_last):
        """A result beat; ``expected_last`` is None when the framing is not known
        (an invocation expected to abort)."""
        if self.after_last:
            self._error(cycle, "result beat after the invocation's last beat, before its status")
        if expected_last is not None and bool(last) != bool(expected_last):
            self._error(cycle, f"'last' is {int(bool(last))} on a beat where "
                               f"{int(bool(expected_last))} is expected")
        if last:
            self.after_last = True

    def status(self, cycle, saw_all_results, clean):
        if clean and not saw_all_results:
            self._error(cycle, "status beat before the invocation's final result")
        self.after_last = False
