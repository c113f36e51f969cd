"""Fixtures shared by the tests."""

from __future__ import annotations

import copy
import signal

import pytest
import torch
from _helpers import SmallCNN, pattern_task

# A suite started in the background of a non-interactive shell (`cmd &`) inherits SIGINT ignored, and
# the interrupt tests (Ctrl-C during training and during a study) would then test nothing but that.
# Restore Python's handler; the processes the tests start inherit SIGINT at its default again.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture
def cnn() -> SmallCNN:
    torch.manual_seed(0)
    model = SmallCNN()
    # Non-trivial BatchNorm statistics so eval and train mode give different outputs.
    with torch.no_grad():
        model.features[1].running_mean.uniform_(-0.2, 0.2)
        model.features[1].running_var.uniform_(0.5, 2.0)
    return model


@pytest.fixture(scope="session")
def trained():
    """A small CNN trained on the pattern task (about a second), with its held-out test set."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(16 * 64, 4)
    )
    x, y = pattern_task(2048, seed=1)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(3):
        for i in range(0, len(x), 128):
            loss = torch.nn.functional.cross_entropy(model(x[i : i + 128]), y[i : i + 128])
            opt.zero_grad()
            loss.backward()
            opt.step()
    x_test, y_test = pattern_task(512, seed=2)
    return model.eval(), x_test, y_test


@pytest.fixture
def ten_class(ten_class_trained):
    """A SmallCNN trained on the 10-class pattern task and 200 of its test images (the first 128 are the
    apgd_targeted tests'): a fresh copy of the session's model, so a test may move or modify it."""
    model, x, y = ten_class_trained
    return copy.deepcopy(model), x, y


@pytest.fixture(scope="session")
def ten_class_trained():
    torch.manual_seed(0)
    x, y = pattern_task(512, seed=0, num_classes=10)
    model = SmallCNN(in_channels=x.shape[1], num_classes=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    x_test, y_test = pattern_task(200, seed=1, num_classes=10)
    return model.eval(), x_test, y_test
