"""Fixtures shared by the tests."""

from __future__ import annotations

import pytest
import torch
from _helpers import SmallCNN


@pytest.fixture
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    model = SmallCNN()
    # Non-trivial BatchNorm statistics so eval and train mode give different outputs.
    with torch.no_grad():
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model
