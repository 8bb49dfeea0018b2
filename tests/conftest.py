import os

import pytest
import torch

torch.set_num_threads(int(os.environ.get("HYBRID_TEST_THREADS", "1")))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (run scripts/gpu-check on the device)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
