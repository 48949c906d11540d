"""Memory of ev.hvp on a block [P, 8] at k = 60000 (all of MNIST): no more than the C++ call.

How it is measured: each call runs in a fresh process (same data, same Evaluation), which resets
the kernel's peak-RSS mark (echo 5 > /proc/self/clear_refs) right before the call and reads VmHWM
right after it; the growth is VmHWM - VmRSS(before). The C++ call is Evaluation::hessian_times
into a block the caller allocated beforehand (tdyn._tdyn._hessian_times); ev.hvp allocates its
result, so it may use the result's P x 8 x 8 bytes more, and 1 MiB for page and malloc-arena
rounding. Separately, tracemalloc (which sees NumPy's allocations) shows that ev.hvp allocates the
result and nothing else on the Python side: V is not copied.
"""

import json
import os
import subprocess
import sys

import pytest
from conftest import BUILD, DATA, needs_mnist

pytestmark = needs_mnist

CHILD = r"""
import json, os, sys, tracemalloc
sys.path.insert(0, sys.argv[1])
import numpy as np, tdyn
from tdyn import _tdyn
data = tdyn.load_data("mnist", data_dir=sys.argv[2])
net = tdyn.Network("784-50-10")
ev = tdyn.Evaluation(net, data, net.init(seed=1))
P, M = net.num_params, 8
V = np.asfortranarray(np.random.default_rng(0).standard_normal((P, M)))
out = np.empty((P, M), order="F") if sys.argv[3] == "cpp" else None
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
before = status("VmRSS:")
if sys.argv[3] == "cpp":
    _tdyn._hessian_times(ev, V, out)
else:
    tracemalloc.start()
    HV = ev.hvp(V)
    traced = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
grown = status("VmHWM:") - before
print(json.dumps({"grown": grown, "traced": traced if sys.argv[3] != "cpp" else 0, "block": P * M * 8}))
"""


def measure(which):
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2"))
    p = subprocess.run([sys.executable, "-c", CHILD, str(BUILD / "python"), str(DATA), which], capture_output=True,
                       text=True, env=env)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK), reason="cannot reset the peak-RSS mark here")
def test_hvp_block_at_60000_allocates_no_more_than_the_cpp_call():
    cpp = measure("cpp")
    py = measure("python")
    block = py["block"]
    print(f"peak RSS growth: C++ hessian_times {cpp['grown'] / 2**20:.1f} MiB, ev.hvp {py['grown'] / 2**20:.1f} MiB; "
          f"Python-side allocations of ev.hvp {py['traced'] / 2**20:.2f} MiB (the result: {block / 2**20:.2f} MiB)")
    assert py["grown"] <= cpp["grown"] + block + 2**20
    # NumPy's allocations during ev.hvp: the result and a few hundred bytes of objects, no copy of V
    assert block <= py["traced"] <= block + 64 * 1024
