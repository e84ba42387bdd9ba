"""Suite-wide settings.

One torch intra-op thread: the test models are tiny, and on a 2-core machine a second thread only
adds barrier spinning (10x slower when anything else runs, e.g. the two-process accelerate test).
Every parity tolerance holds with 1 or 2 threads (the fixtures' own 1-vs-2-thread floor is in
tests/fixtures/vc2/README.md). ``TSM_TEST_THREADS=2 make test`` runs the suite with another thread
count, to check exactly that.
"""

import os

import torch

torch.set_num_threads(int(os.environ.get("TSM_TEST_THREADS", "1")))
