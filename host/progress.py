"""Progress bars for long runs (RTL layers, offloaded models, sweeps, estimates).

Every long-running function takes ``progress``:

* ``"auto"`` (the default): a tqdm bar on standard error when it is a terminal,
  nothing otherwise (pipes, CI logs, pytest) or when quiet (:func:`set_quiet`,
  the CLI's ``--quiet``, or ``SYSTOLIC_CONV_QUIET=1`` in the environment);
* ``True``: a bar even when standard error is not a terminal;
* ``False`` or ``None``: no bar;
* a callable ``progress(done, total, what="")``: called instead of a bar.

The bar is created at its first update, so a run that finishes at once shows
nothing.
"""

from __future__ import annotations

import os
import sys

__all__ = ["ProgressBar", "resolve_progress", "set_quiet", "is_quiet"]

_quiet = None


def set_quiet(flag=True):
    """Silence (or re-enable) every progress bar and build notice of this process."""
    global _quiet
    _quiet = bool(flag)


def is_quiet():
    """Whether bars and notices are silenced (:func:`set_quiet` or ``SYSTOLIC_CONV_QUIET``)."""
    if _quiet is not None:
        return _quiet
    return os.environ.get("SYSTOLIC_CONV_QUIET", "").strip().lower() in ("1", "true", "yes")


def _stderr_is_tty():
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class ProgressBar:
    """A ``progress(done, total, what="")`` callable drawing a tqdm bar on stderr.

    Parameters
    ----------
    desc : str
        Label in front of the bar.
    unit : str
        What is counted (``"invocation"``, ``"layer"``, ...).
    force : bool
        Draw even when standard error is not a terminal (still not when quiet).
    """

    def __init__(self, desc, unit="it", force=False):
        self.desc = desc
        self.unit = unit
        self.enabled = not is_quiet() and (force or _stderr_is_tty())
        self._bar = None

    def __call__(self, done, total, what=""):
        if not self.enabled:
            return
        if self._bar is None:
            from tqdm import tqdm
            self._bar = tqdm(total=total, desc=self.desc, unit=self.unit, leave=False,
                             file=sys.stderr, dynamic_ncols=True)
        bar = self._bar
        if bar.total != total:
            bar.total = total
        bar.n = done
        if what:
            bar.set_postfix_str(str(what)[:40], refresh=False)
        bar.refresh()

    def close(self):
        """Remove the bar from the terminal."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def resolve_progress(progress, desc, unit="it"):
    """Turn a ``progress`` argument into ``(callback or None, closer)``.

    Parameters
    ----------
    progress : {"auto", True, False, None} or callable
        See the module docstring.
    desc, unit : str
        Label and unit of a bar made here.

    Returns
    -------
    callback : callable or None
    close : callable
        Call when the run ends (removes a bar made here; no-op otherwise).

    Raises
    ------
    TypeError
        For any other value.
    """
    if progress is None or progress is False:
        return None, lambda: None
    if callable(progress):
        return progress, lambda: None
    if progress is True or (isinstance(progress, str) and progress == "auto"):
        bar = ProgressBar(desc, unit=unit, force=progress is True)
        return (bar if bar.enabled else None), bar.close
    raise TypeError(f"progress={progress!r} must be 'auto', True, False, None or a callable "
                    f"progress(done, total)")
