import os

import pytest
import torch

# Tests check correctness, not speed: one intra-op thread keeps them deterministic and avoids
# oversubscription when several test processes (child runs, torchrun workers) share 2 cores.
torch.set_num_threads(int(os.environ.get("DLBENCH_TEST_THREADS", "1")))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device; run on a GPU machine (bench/gpu_check.sh)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip_gpu)
