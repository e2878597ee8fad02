"""Shared pieces of the ``systolic-conv`` command line.

* argument types that reject bad values at parse time with a message naming the
  flag (``positive_int``, ``int_pair``, ``output_file``, ...);
* the hardware flags, generated from :class:`~.hw.config.HardwareConfig`'s
  dataclass fields and documented from its docstring (the one place they are
  listed);
* :func:`run_command`: every user error exits with status 2 and one line
  (argparse's ``prog: error: ...``), any other failure with status 1 and one
  line; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import re
import sys

__all__ = ["HelpFormatter", "UsageError", "positive_int", "nonneg_int", "positive_float",
           "int_pair", "padding_arg", "existing_file", "existing_dir",
           "output_file", "output_dir", "add_hw_args", "hw_from_args", "common_parser",
           "run_command", "version_string"]


class UsageError(Exception):
    """A user error found before the work starts; ``flag`` names the argument."""

    def __init__(self, flag, message):
        super().__init__(message)
        self.flag = flag

    def __str__(self):
        msg = super().__str__()
        return f"argument {self.flag}: {msg}" if self.flag else msg


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows ``(default: ...)`` unless the help already states it or there is none."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "(default" in text or action.default in (None, argparse.SUPPRESS) or \
                isinstance(action, (argparse._StoreTrueAction, argparse._VersionAction,
                                    argparse._HelpAction)):
            return text
        return text + " (default: %(default)s)"


# ----------------------------------------------------------------------------- types

def _type(name, check, what):
    def convert(text):
        try:
            value = check(text)
        except (TypeError, ValueError):
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"must be {what}, not {text!r}")
        return value
    convert.__name__ = name
    return convert


def _int_at_least(lo):
    def check(text):
        v = int(text)
        return v if v >= lo else None
    return check


positive_int = _type("positive_int", _int_at_least(1), "a positive integer")
nonneg_int = _type("nonneg_int", _int_at_least(0), "a non-negative integer")


def _positive_float(text):
    v = float(text)
    return v if 0 < v < float("inf") else None


positive_float = _type("positive_float", _positive_float, "a positive number")


def _pair(lo):
    def check(text):
        parts = [int(t) for t in str(text).split(",")]
        if len(parts) not in (1, 2) or any(p < lo for p in parts):
            return None
        return parts[0] if len(parts) == 1 else tuple(parts)
    return check


int_pair = _type("int_pair", _pair(1), "a positive integer or a pair 'H,W'")


def _padding(text):
    return text if text in ("same", "valid") else _pair(0)(text)


padding_arg = _type("padding_arg", _padding,
                    "a non-negative integer, a pair 'H,W', 'same' or 'valid'")


def existing_file(text):
    p = pathlib.Path(text)
    if not p.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return p


def existing_dir(text):
    p = pathlib.Path(text)
    if not p.is_dir():
        raise argparse.ArgumentTypeError(f"no such directory: {text!r}")
    return p


def _writable_parent(p, text):
    parent = p.parent if str(p.parent) else pathlib.Path(".")
    if not parent.is_dir():
        raise argparse.ArgumentTypeError(f"directory {str(parent)!r} of {text!r} does not exist")
    if not os.access(parent, os.W_OK):
        raise argparse.ArgumentTypeError(f"directory {str(parent)!r} is not writable")


def output_file(suffixes=None):
    """A type for an output file: its directory exists and is writable, it is not
    a directory, and its suffix is one of ``suffixes`` (when given)."""
    def convert(text):
        p = pathlib.Path(text)
        if p.is_dir():
            raise argparse.ArgumentTypeError(f"{text!r} is a directory")
        if suffixes and p.suffix.lower() not in suffixes:
            raise argparse.ArgumentTypeError(
                f"{text!r} must end in {', '.join(suffixes)}")
        _writable_parent(p, text)
        return p
    convert.__name__ = "output_file"
    return convert


def output_dir(text):
    """A type for an output directory: it exists as a directory, or its parent does."""
    p = pathlib.Path(text)
    if p.exists() and not p.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} exists and is not a directory")
    if not p.exists():
        _writable_parent(p, text)
    elif not os.access(p, os.W_OK):
        raise argparse.ArgumentTypeError(f"directory {text!r} is not writable")
    return p


# ----------------------------------------------------------------------------- hardware

def _field_docs(cls):
    """``{field: one-line description}`` from a NumPy-style ``Parameters`` section."""
    docs, name, lines = {}, None, []
    text = (cls.__doc__ or "").split("Parameters\n    ----------\n", 1)[-1]
    for line in text.splitlines():
        m = re.match(r"^    (\w+) : ", line)
        if m:
            if name:
                docs[name] = " ".join(lines)
            name, lines = m.group(1), []
        elif name and line.startswith("        "):
            lines.append(line.strip())
    if name:
        docs[name] = " ".join(lines)
    return {k: re.sub(r"``([^`]*)``", r"\1", v) for k, v in docs.items()}


def _flag(name):
    return "--" + name.replace("_", "-")


def _faults_type(text):
    return tuple(t.strip() for t in text.split(",") if t.strip())


def add_hw_args(parser, exclude=()):
    """Add one flag per :class:`HardwareConfig` field (except ``exclude``) and ``--hw-json``.

    Every flag defaults to None (the field's default, shown in the help), so an
    explicit flag can be told apart and overrides ``--hw-json``.
    """
    from .hw.config import HardwareConfig
    docs = _field_docs(HardwareConfig)
    g = parser.add_argument_group("hardware configuration (HardwareConfig fields)")
    for f in dataclasses.fields(HardwareConfig):
        if f.name in exclude:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = (",".join(default) or "none") if f.name == "faults" else default
        kw = dict(type=_faults_type if f.name == "faults" else int, default=None,
                  metavar="NAME,..." if f.name == "faults" else "N",
                  help=docs.get(f.name, f.name) + (
                      "" if "default" in docs.get(f.name, "") else f" (default: {shown})"))
        if f.name == "data_width":
            kw["choices"] = (4, 8, 16)
            kw.pop("metavar")
        g.add_argument(_flag(f.name), **kw)
    g.add_argument("--hw-json", type=existing_file, metavar="FILE", default=None,
                   help="a HardwareConfig as JSON (HardwareConfig.to_dict()); flags given "
                        "beside it override its fields")


def hw_from_args(args, **override):
    """The :class:`HardwareConfig` of the parsed flags; :class:`UsageError` names the flag."""
    from .hw.config import HardwareConfig
    names = [f.name for f in dataclasses.fields(HardwareConfig)]
    kw = {}
    if getattr(args, "hw_json", None):
        path = args.hw_json
        try:
            kw = json.loads(pathlib.Path(path).read_text())
        except json.JSONDecodeError as exc:
            raise UsageError("--hw-json", f"{str(path)!r} is not valid JSON ({exc})") from None
        if not isinstance(kw, dict):
            raise UsageError("--hw-json", f"{str(path)!r} must hold a JSON object")
        for key in kw:
            if key not in names:
                raise UsageError("--hw-json", f"{str(path)!r}: unknown key {key!r}; "
                                 f"HardwareConfig fields: {', '.join(names)}")
    for name in names:
        value = getattr(args, name, None)
        if value is not None:
            kw[name] = value
    kw.update(override)
    try:
        return HardwareConfig(**kw)
    except (TypeError, ValueError) as exc:
        msg = str(exc)
        field = "faults" if msg.startswith("unknown fault") else next(
            (n for n in sorted(names, key=len, reverse=True) if msg.startswith(n + " ")), None)
        if field and getattr(args, field, None) is not None:
            flag = _flag(field)
        elif getattr(args, "hw_json", None):
            flag = "--hw-json"
        else:
            flag = _flag(field) if field else None
        raise UsageError(flag, msg) from None


# ----------------------------------------------------------------------------- running

def version_string():
    from . import __version__
    return f"systolic-conv {__version__}"


def common_parser():
    """Options every subcommand takes: ``--quiet`` and ``--debug``."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("output")
    g.add_argument("--quiet", action="store_true",
                   help="no progress bars or build notices (they are shown only on a "
                        "terminal anyway)")
    g.add_argument("--debug", action="store_true",
                   help="show the Python traceback of an error")
    return p


def run_command(parser, argv=None):
    """Parse ``argv`` and run the chosen subcommand; return the exit status.

    A subcommand sets ``prepare(args)`` (checks everything and builds what the
    work needs from what the user gave: files, flags; any error there is a user
    error: status 2, ``parser.error`` style)
    and ``run(args, prepared)`` (the work: status 0 or 1; an exception is one
    line on stderr and status 1). ``--debug`` re-raises instead.
    """
    args = parser.parse_args(argv)
    sub = getattr(args, "subparser", parser)
    from .progress import set_quiet
    if getattr(args, "quiet", False):
        set_quiet(True)
    debug = getattr(args, "debug", False)
    try:
        prepared = args.prepare(args)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{sub.prog}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:           # noqa: BLE001 -- what the user gave is wrong
        if debug:
            raise
        sub.error(_one_line(exc))
    try:
        return args.run(args, prepared)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"{sub.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:           # noqa: BLE001 -- reported in one line, not a traceback
        if debug:
            raise
        print(f"{sub.prog}: error: {_one_line(exc)} ({type(exc).__name__}; --debug shows "
              f"the traceback)", file=sys.stderr)
        return 1


def _one_line(exc):
    """The first line of an exception's message (``...`` marks the rest)."""
    if isinstance(exc, FileNotFoundError) and exc.filename:
        return f"no such file: {exc.filename!r}"
    lines = (str(exc) or type(exc).__name__).strip().splitlines()
    return lines[0] + (" ..." if len(lines) > 1 else "")
