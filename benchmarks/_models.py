"""Models the benchmarks attack. Plain definitions, so the benchmarks need no torchvision.

(The library's own model zoo is nonrobust_ext.models, once it exists; these stay minimal and fixed so
benchmark numbers remain comparable across versions.)
"""

from __future__ import annotations

import torch
from torch import nn


def mnist_cnn(num_classes: int = 10) -> nn.Module:
    """A 2-conv CNN for 1x28x28 inputs (Fashion-MNIST, the study's built-in default data)."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, num_classes),
    )


def small_cnn(num_classes: int = 10) -> nn.Module:
    """A 4-layer CNN for 3x32x32 inputs (~0.3 M parameters)."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(64, 128, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(128, num_classes),
    )


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class CifarResNet18(nn.Module):
    """ResNet-18 for 32x32 inputs (3x3 stem, no max-pool), as in most adversarial-training papers."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.ReLU())
        layers, cin = [], 64
        for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            layers += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layers(self.stem(x)))


def resnet50(num_classes: int = 1000) -> nn.Module:
    """torchvision's ImageNet ResNet-50 (224 px), for the GPU benchmark; needs torchvision."""
    try:
        import torchvision
    except Exception as error:  # the CPU torch here cannot import torchvision (see ENVIRONMENT.md)
        raise RuntimeError(f"the resnet50 benchmark case needs torchvision, which did not import: {error}") from None
    return torchvision.models.resnet50(num_classes=num_classes)


MODELS = {"mnist_cnn": mnist_cnn, "small_cnn": small_cnn, "resnet18": CifarResNet18, "resnet50": resnet50}
INPUT_SHAPES = {
    "mnist_cnn": (1, 28, 28), "small_cnn": (3, 32, 32), "resnet18": (3, 32, 32), "resnet50": (3, 224, 224),
}
