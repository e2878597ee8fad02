"""Per-block resource table of a synthesized accelerator, as Markdown.

    python bench/fpga_blocks.py build/synth/synth-8x8.json [--alone DIR]

The first argument is the JSON report of ``make synth`` (the whole accelerator):
its ``blocks`` entry charges each mapped cell to the block whose registers, memory
or multiplier inputs it feeds (Yosys names a cell after the signal it drives).
``--alone DIR`` adds each block's Fmax synthesized, placed and routed on its own
(``make synth BLOCK=name``; the JSON reports ``synth-RxC-<block>.json`` in DIR).
"""

import argparse
import json
import pathlib
import re

# the accelerator's submodule names (hw/accel.py) -> the block names of hw/blocks.py
SUBMODULES = {"ctl": "control", "par": "params", "wst": "weight_store",
              "wld": "weight_loader", "lb": "line_buffer", "seq": "sequencer",
              "fetch": "fetch", "rv": "row_vector", "arr": "array", "acc": "accumulator",
              "rq": "requantizer", "pk": "packer", "q": "queue", "cnt": "counters"}
KINDS = ("LUT4", "CCU2C", "FF", "DSP", "BRAM", "DPRAM")


def table(report, alone=None):
    rows = {}
    for name, cells in report["blocks"].items():
        sub = re.sub(r"\$\d+$", "", name)
        block = SUBMODULES.get(sub, "(wiring and wrapper)")
        row = rows.setdefault(block, {k: 0 for k in KINDS})
        for k in KINDS:
            row[k] += cells.get(k, 0)
    cfg = report["cfg"]
    out = [f"| block ({cfg['rows']}x{cfg['cols']}) | LUT4 | CCU2C | FF | DSP | BRAM | "
           f"DPRAM (LUT) | Fmax alone |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    order = list(SUBMODULES.values()) + ["(wiring and wrapper)"]
    for block in order:
        if block not in rows:
            continue
        r = rows[block]
        fmax = ""
        if alone is not None:
            f = pathlib.Path(alone) / f"synth-{cfg['rows']}x{cfg['cols']}-{block}.json"
            if f.exists():
                fmax = f"{json.loads(f.read_text())['fmax_mhz']:.1f} MHz"
        out.append(f"| {block} | " + " | ".join(f"{r[k]:,}" for k in KINDS) + f" | {fmax} |")
    tot = {k: sum(r[k] for r in rows.values()) for k in KINDS}
    out.append("| **total** | " + " | ".join(f"**{tot[k]:,}**" for k in KINDS) +
               f" | **{report['fmax_mhz']:.1f} MHz** (whole design) |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("report", help="the JSON report of make synth (whole accelerator)")
    ap.add_argument("--alone", metavar="DIR", default=None,
                    help="directory of per-block reports synth-RxC-<block>.json")
    a = ap.parse_args()
    print(table(json.loads(pathlib.Path(a.report).read_text()), a.alone))


if __name__ == "__main__":
    main()
