"""Load-independent costs next to the timings: aten ops and FLOPs of a call, and instructions
executed (valgrind's callgrind) for a region of a child process.

Wall and CPU seconds on a machine shared with other jobs move by tens of percent with the load;
these counts do not: ``op_counts`` (a ``TorchDispatchMode`` that sees every aten op a call
dispatches, after composite ops decompose) and ``flops`` (``torch.utils.flop_counter``: matmuls,
convolutions and attention) are exact for a given input, and callgrind's instruction count (Ir)
of a region repeats within a fraction of a percent whatever else runs (it does not see cache
misses or SIMD width, so it complements time rather than replacing it).

Callgrind: :func:`run_under_callgrind` starts ``python <script> <args>`` under ``valgrind
--tool=callgrind --instr-atstart=no``; inside it, :func:`instructions` zeroes the counters,
runs the region with instrumentation on and dumps (through ``callgrind_control``), and returns
the region's count less that of an empty region (the ``callgrind_control`` round trips).
"""

from __future__ import annotations

import collections
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

__all__ = [
    "OpCounter",
    "op_counts",
    "flops",
    "callgrind_available",
    "under_callgrind",
    "instructions",
    "run_under_callgrind",
]

_OUT_ENV = "TSM_CALLGRIND_OUT"  # set by run_under_callgrind for the child: callgrind's output file


class OpCounter(TorchDispatchMode):
    """Counts the aten ops dispatched inside the ``with`` block, by overload packet name."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: collections.Counter[str] = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.counts[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


def op_counts(fn: Callable[[], object]) -> collections.Counter[str]:
    """aten ops dispatched by one ``fn()`` call, by name."""
    with OpCounter() as counter:
        fn()
    return counter.counts


def flops(fn: Callable[[], object]) -> int:
    """FLOPs of one ``fn()`` call (matmuls, convolutions, attention; 2 per multiply-add; in-place
    ``addmm_``/``baddbmm_`` counted like their out-of-place forms, which torch's table lacks)."""
    in_place = {torch.ops.aten.addmm_: _matmul_flop, torch.ops.aten.baddbmm_: _matmul_flop}
    with FlopCounterMode(display=False, custom_mapping=in_place) as counter:
        fn()
    return int(counter.get_total_flops())


def _matmul_flop(self_shape, a_shape, b_shape, *args, out_shape=None, **kwargs) -> int:
    """``self += a @ b`` (optionally batched): 2 FLOPs per multiply-add."""
    batch = a_shape[0] if len(a_shape) == 3 else 1
    return 2 * batch * a_shape[-2] * a_shape[-1] * b_shape[-1]


def callgrind_available() -> bool:
    return shutil.which("valgrind") is not None and shutil.which("callgrind_control") is not None


def under_callgrind() -> bool:
    """True inside a process started by :func:`run_under_callgrind`."""
    return _OUT_ENV in os.environ


def _control(*args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(os.getpid())], check=True, capture_output=True)


def _dump_total(label: str) -> int:
    """Dump the counters since the last zeroing; their total (Ir) from the dump file."""
    out = Path(os.environ[_OUT_ENV])
    before = set(out.parent.glob(out.name + ".*"))
    _control("--dump=" + label)
    (dump,) = set(out.parent.glob(out.name + ".*")) - before
    for line in dump.read_text().splitlines():
        if line.startswith("totals:") or line.startswith("summary:"):
            return int(line.split()[1])
    raise RuntimeError(f"no totals in callgrind dump {dump}")


def instructions(fn: Callable[[], object]) -> int:
    """Instructions executed by one ``fn()`` call (in a process under :func:`run_under_callgrind`;
    instrumented only for the region, so the rest of the process runs at valgrind's light speed)."""
    _control("--instr=on")
    _control("--zero")
    empty = _dump_total("empty")  # the zero/dump round trip alone
    _control("--zero")
    fn()
    total = _dump_total("region") - empty
    _control("--instr=off")
    return total


def run_under_callgrind(script: Path, args: list[str], workdir: Path, timeout: float) -> dict:
    """Run ``python script *args`` under callgrind (instrumentation off until a region); the child
    writes a JSON object to the path given as its last argument, which is returned."""
    out_json = workdir / "callgrind_result.json"
    env = {**os.environ, _OUT_ENV: str(workdir / "callgrind.out")}
    cmd = [
        "valgrind",
        "--tool=callgrind",
        "--instr-atstart=no",
        f"--callgrind-out-file={workdir / 'callgrind.out'}",
        sys.executable,
        str(script),
        *args,
        str(out_json),
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=timeout)
    return json.loads(out_json.read_text())
