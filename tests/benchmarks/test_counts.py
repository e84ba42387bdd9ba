"""benchmarks/counts.py: the load-independent counters next to the timings."""

import torch

from benchmarks.counts import flops, op_counts


def test_flops_count_in_place_matmuls_like_their_out_of_place_forms():
    a, b, y = torch.randn(8, 4), torch.randn(4, 5), torch.zeros(8, 5)
    assert flops(lambda: torch.addmm(y, a, b)) == flops(lambda: y.addmm_(a, b)) == 2 * 8 * 4 * 5
    a3, b3, y3 = torch.randn(3, 8, 4), torch.randn(3, 4, 5), torch.zeros(3, 8, 5)
    assert flops(lambda: torch.baddbmm(y3, a3, b3)) == flops(lambda: y3.baddbmm_(a3, b3)) == 3 * 2 * 8 * 4 * 5


def test_op_counts_sees_the_aten_ops_a_call_dispatches():
    x, w = torch.randn(2, 3, 4), torch.randn(5, 4)
    counts = op_counts(lambda: torch.nn.functional.linear(x, w).relu())
    assert counts["aten.mm"] == 1 and counts["aten.relu"] == 1  # linear decomposes: view, t, mm, view
