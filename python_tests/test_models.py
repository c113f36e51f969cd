"""nonrobust_ext.models: every architecture builds and runs for 1 and 3 channels, the feature/stage
contracts, the Normalize layer, torchvision-compatible state dicts (against saved key lists, and against
torchvision itself where it imports), checkpoint formats (robustness library, DataParallel, training
checkpoints), weights-only loading, key-mismatch errors and atomic saving."""

from __future__ import annotations

import functools
import os
import sys
import types
from pathlib import Path

import pytest
import torch
from _helpers import DEVICES
from torch import nn

from nonrobust_ext import models

DATA = Path(__file__).parent / "data"
SMALL = ["preact_resnet18", "resnet18_small", "resnet8", "wrn16_4", "wrn28_10"]
IMAGENET = ["resnet18", "resnet50", "wide_resnet50_2"]
EFFICIENTNET = ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
NUM_STAGES = {"resnet8": 4, "wrn16_4": 4, "wrn28_10": 4, **dict.fromkeys(EFFICIENTNET, 9)}  # 5 for the others
IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]


def _input(name: str, channels: int, batch: int = 2, seed: int = 0) -> torch.Tensor:
    size = 64 if name in IMAGENET + EFFICIENTNET else (28 if channels == 1 else 32)
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed))


def _randomize_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BN statistics and affine parameters, so eval outputs depend on every buffer."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.num_features, generator=g) * 0.2 - 0.1)
                m.num_batches_tracked.fill_(7)
    return model


@functools.cache
def _imagenet_1000(name: str) -> nn.Module:
    """One 1000-class build per ImageNet architecture, shared by the read-only tests below (never mutated)."""
    torch.manual_seed(0)
    return models.create(name, num_classes=1000)


def _read_key_list(name: str) -> list[tuple[str, list[int]]]:
    rows = []
    for line in (DATA / f"{name}_keys.txt").read_text().splitlines():
        if not line or line.startswith("#"):
            continue
        key, shape = line.split("\t")
        rows.append((key, [int(d) for d in shape.strip("[]").split(",") if d.strip()]))
    return rows


# ---------------------------------------------------------------------------------------------- create


def test_available_lists_exactly_the_builtin_architectures():
    assert models.available() == sorted(SMALL + IMAGENET + EFFICIENTNET)


@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("name", SMALL + IMAGENET + EFFICIENTNET)
def test_every_model_builds_and_runs(name, channels):
    torch.manual_seed(0)
    model = models.create(name, num_classes=7, in_channels=channels).eval()
    assert isinstance(model, models.ImageClassifier)
    assert model.arch == name and model.in_channels == channels and model.num_classes == 7
    assert isinstance(model.fc, nn.Linear) and model.fc.in_features == model.feature_dim
    x = _input(name, channels)
    with torch.no_grad():
        logits = model(x)
        emb, logits2 = model(x, return_features=True)
        head = model.fc(emb)
    assert logits.shape == (2, 7)
    assert emb.shape == (2, model.feature_dim)
    torch.testing.assert_close(logits2, logits, rtol=0, atol=0)
    torch.testing.assert_close(head, logits, rtol=0, atol=0)
    assert torch.isfinite(logits).all()
    assert not torch.equal(logits[0], logits[1])  # the two random images are told apart


@pytest.mark.parametrize("name", SMALL + IMAGENET + EFFICIENTNET)
def test_stages_partition_the_backbone_in_forward_order(name):
    torch.manual_seed(0)
    model = _randomize_bn(models.create(name, num_classes=5, in_channels=1)).eval()
    stages = model.stages()
    assert len(stages) == NUM_STAGES.get(name, 5)
    assert all(isinstance(s, nn.Module) for s in stages)
    ids = [{id(p) for p in s.parameters()} for s in stages]
    for i in range(len(ids)):
        assert ids[i], f"stage {i} has no parameters"
        for j in range(i + 1, len(ids)):
            assert not ids[i] & ids[j], f"stages {i} and {j} share parameters"
    head = {id(p) for p in model.fc.parameters()}
    assert set().union(*ids) == {id(p) for p in model.parameters()} - head
    # Chaining the stages on a normalised input is the backbone: they are in forward order.
    x = _input(name, 1)
    with torch.no_grad():
        h = model.normalize(x)
        for s in stages:
            h = s(h)
        chained = torch.flatten(nn.functional.adaptive_avg_pool2d(h, 1), 1)
    # Freezing stages[0] leaves its parameters without gradients; the rest still get them.
    for p in stages[0].parameters():
        p.requires_grad_(False)
    emb, logits = model(x, return_features=True)
    torch.testing.assert_close(emb.detach(), chained)
    logits.sum().backward()
    assert all(p.grad is None for p in stages[0].parameters())
    assert all(p.grad is not None for s in stages[1:] for p in s.parameters())
    assert model.fc.weight.grad is not None


def test_resnet8_is_small_and_fast_shaped():
    model = models.create("resnet8", num_classes=10, in_channels=1)
    assert sum(p.numel() for p in model.parameters()) < 100_000
    assert model.feature_dim == 64
    assert [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)] == [
        16, 16, 16, 32, 32, 64, 64]
    assert model.conv1.stride == (1, 1) and isinstance(model.maxpool, nn.Identity)


@pytest.mark.parametrize("name, depth, k, dim", [("wrn16_4", 16, 4, 256), ("wrn28_10", 28, 10, 640)])
def test_wide_resnets_have_their_depth_and_width(name, depth, k, dim):
    model = models.create(name, num_classes=10)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3)]
    assert len(convs) == depth - 3  # the stem + 2 per block (depth = 6n + 4 counts these, the head, 2 shortcuts)
    assert model.feature_dim == dim == 64 * k
    assert len(model.layer1) == len(model.layer3) == (depth - 4) // 6


def test_create_passes_architecture_options():
    m = models.create("resnet18", num_classes=3, zero_init_residual=True)
    assert all(torch.count_nonzero(b.bn2.weight) == 0 for layer in m.stages()[1:] for b in layer)
    w = models.create("wrn16_4", num_classes=3, dropout=0.3)
    assert all(b.dropout == 0.3 for b in w.layer1)
    with pytest.raises(ValueError, match="dropout"):
        models.create("resnet18", num_classes=3, dropout=0.3)  # not an option of plain ResNets
    with pytest.raises(ValueError, match="dropout"):
        models.create("wrn16_4", num_classes=3, dropout=1.5)


def test_create_rejects_unknown_names_listing_the_available_ones():
    with pytest.raises(ValueError) as err:
        models.create("resnet9000", num_classes=10)
    assert "resnet9000" in str(err.value)
    assert all(name in str(err.value) for name in models.available())


@pytest.mark.parametrize("arg", ["num_classes", "in_channels"])
@pytest.mark.parametrize("bad, error", [(0, ValueError), (-3, ValueError), (2.5, TypeError), (True, TypeError),
                                        ("10", TypeError), (None, TypeError)])
def test_create_rejects_bad_sizes_naming_the_argument(arg, bad, error):
    """A wrong value is a ValueError, a wrong type a TypeError (as everywhere: nonrobust_ext._validate)."""
    kwargs = {"num_classes": 10, "in_channels": 3, arg: bad}
    with pytest.raises(error, match=arg):
        models.create("resnet8", **kwargs)


def test_create_rejects_normalisation_for_another_channel_count():
    with pytest.raises(ValueError, match="mean/std"):
        models.create("resnet8", num_classes=10, in_channels=1, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    models.create("resnet8", num_classes=10, in_channels=1, mean=[0.286], std=[0.353])  # fine


def test_reset_head_gives_a_new_label_set_on_the_same_device_and_dtype():
    model = models.create("resnet8", num_classes=10, in_channels=1).double()
    old_fc = model.fc
    model.reset_head(4)
    assert model.fc is not old_fc and model.num_classes == 4 and model.fc.in_features == model.feature_dim
    assert model.fc.weight.dtype == torch.float64 and model.fc.weight.requires_grad
    assert model(_input("resnet8", 1).double()).shape == (2, 4)
    with pytest.raises(ValueError, match="num_classes"):
        model.reset_head(0)


# -------------------------------------------------------------------------------------------- Normalize


def test_normalize_numerics():
    x = torch.rand(4, 3, 5, 6, generator=torch.Generator().manual_seed(1))
    norm = models.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    expected = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    torch.testing.assert_close(norm(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(models.Normalize(0.5, 0.25)(x), (x - 0.5) / 0.25, rtol=0, atol=0)
    torch.testing.assert_close(models.Normalize(None, [2.0, 4.0, 8.0])(x), x / torch.tensor([2.0, 4.0, 8.0]).view(1, 3, 1, 1))
    identity = models.Normalize(None, None)
    assert identity.is_identity and identity(x) is x
    # bfloat16 input: statistics follow the input's dtype instead of promoting it.
    assert norm(x.bfloat16()).dtype == torch.bfloat16


@pytest.mark.parametrize("mean, std, match, error", [
    ([0.5, 0.5], [0.1, 0.2, 0.3], "same number", ValueError),
    ([0.5], [0.0], "std must be > 0", ValueError),
    ([float("nan")], [1.0], "mean must be finite", ValueError),
    ("0.5", [1.0], "mean", TypeError),  # a wrong type, as everywhere (nonrobust_ext._validate)
    ([], [1.0], "mean", ValueError),
])
def test_normalize_rejects_bad_statistics(mean, std, match, error):
    with pytest.raises(error, match=match):
        models.Normalize(mean, std)


def test_normalize_rejects_an_input_with_another_channel_count():
    with pytest.raises(ValueError, match="3 channels"):
        models.Normalize(IMAGENET_MEAN, IMAGENET_STD)(torch.rand(2, 1, 4, 4))


def test_normalize_buffers_are_not_in_the_state_dict():
    model = models.create("resnet8", num_classes=10, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    assert not any(k.startswith("normalize") for k in model.state_dict())
    assert {n for n, _ in model.named_buffers()} >= {"normalize.mean", "normalize.std"}
    # ... so a model without normalisation has the very same keys.
    assert list(model.state_dict()) == list(models.create("resnet8", num_classes=10).state_dict())


@pytest.mark.parametrize("device", ["meta", *DEVICES])
def test_model_to_moves_the_normalize_buffers(device):
    model = models.create("resnet8", num_classes=10, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    model.to(torch.float64)
    assert model.normalize.mean.dtype == torch.float64 and model.normalize.std.dtype == torch.float64
    model.to(device)
    assert model.normalize.mean.device.type == device and model.normalize.std.device.type == device
    if device != "meta":
        x = _input("resnet8", 3).to(device, torch.float64)
        assert model(x).dtype == torch.float64


# ---------------------------------------------------------------------------- torchvision compatibility


@pytest.mark.parametrize("name", IMAGENET)
def test_imagenet_state_dict_matches_torchvision_key_list(name):
    expected = _read_key_list(name)
    got = [(k, list(v.shape)) for k, v in _imagenet_1000(name).state_dict().items()]
    assert got == expected  # keys, shapes and order


@pytest.mark.parametrize("name, count", [("resnet18", 11_689_512), ("resnet50", 25_557_032),
                                         ("wide_resnet50_2", 68_883_240)])
def test_imagenet_parameter_counts_equal_torchvision(name, count):
    assert sum(p.numel() for p in _imagenet_1000(name).parameters()) == count


def test_in_channels_changes_only_conv1():
    one = models.create("resnet18", num_classes=1000, in_channels=1).state_dict()
    three = _imagenet_1000("resnet18").state_dict()
    assert list(one) == list(three)
    assert [k for k in one if one[k].shape != three[k].shape] == ["conv1.weight"]
    assert one["conv1.weight"].shape == (64, 1, 7, 7)
    with pytest.raises(ValueError, match=r"conv1\.weight: \[64, 1, 7, 7\] vs \[64, 3, 7, 7\]"):
        models.load_weights(models.create("resnet18", num_classes=1000, in_channels=1), three)


def _torchvision_models_or_skip():
    try:
        from torchvision import models as tv_models
    except Exception as error:  # missing, or built for another torch (RuntimeError)
        pytest.skip(f"torchvision does not import here ({type(error).__name__}: {str(error)[:80]})")
    return tv_models


@pytest.mark.parametrize("name", IMAGENET)
def test_against_torchvision_itself(name):
    tv_models = _torchvision_models_or_skip()
    torch.manual_seed(0)
    tv = _randomize_bn(getattr(tv_models, name)(num_classes=10)).eval()
    ours = models.create(name, num_classes=10).eval()
    assert [(k, v.shape) for k, v in ours.state_dict().items()] == [(k, v.shape) for k, v in tv.state_dict().items()]
    report = models.load_weights(ours, tv.state_dict())
    assert report.format == "native" and not report.missing
    x = _input(name, 3)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x))
    wrapped = models.create(f"torchvision:{name}", num_classes=10)
    assert list(wrapped.state_dict()) == list(tv.state_dict())


def test_torchvision_names_raise_a_clear_error_without_torchvision(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(ImportError) as err:
        models.create("torchvision:resnet18", num_classes=10)
    msg = str(err.value)
    assert "torchvision could not be imported" in msg
    assert all(name in msg for name in IMAGENET)


def _fake_torchvision(monkeypatch):
    """A stand-in torchvision (a VGG-like net whose head is classifier.2) to test the wrapper anywhere."""

    class TinyVGG(nn.Module):
        def __init__(self, num_classes):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
            self.classifier = nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, num_classes))

        def forward(self, x):
            return self.classifier(torch.flatten(self.features(x), 1))

    tv_models = types.SimpleNamespace(
        list_models=lambda module=None: ["tiny_vgg"],
        get_model=lambda name, num_classes=1000, **kw: TinyVGG(num_classes),
    )
    fake = types.ModuleType("torchvision")
    fake.models = tv_models
    monkeypatch.setitem(sys.modules, "torchvision", fake)
    return TinyVGG


def test_torchvision_wrapper_moves_the_head_to_fc(monkeypatch):
    TinyVGG = _fake_torchvision(monkeypatch)
    torch.manual_seed(0)
    model = models.create("torchvision:tiny_vgg", num_classes=5, mean=IMAGENET_MEAN, std=IMAGENET_STD).eval()
    assert model.arch == "torchvision:tiny_vgg" and model.feature_dim == 8
    assert list(model.state_dict()) == ["features.0.weight", "features.0.bias", "classifier.0.weight",
                                        "classifier.0.bias", "fc.weight", "fc.bias"]
    x = torch.rand(3, 3, 8, 8)
    emb, logits = model(x, return_features=True)
    assert emb.shape == (3, 8) and logits.shape == (3, 5)
    torch.testing.assert_close(model.fc(emb), logits)
    # A torchvision state dict (head at classifier.2) loads, and reproduces torchvision's outputs.
    tv = TinyVGG(5).eval()
    report = models.load_weights(model, tv.state_dict())
    assert "fc.weight" in report.loaded
    norm = models.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    torch.testing.assert_close(model(x), tv(norm(x)))
    with pytest.raises(NotImplementedError, match="stages"):
        model.stages()
    with pytest.raises(ValueError, match="in_channels"):
        models.create("torchvision:tiny_vgg", num_classes=5, in_channels=1)
    with pytest.raises(ValueError, match="unknown torchvision"):
        models.create("torchvision:nope", num_classes=5)


# --------------------------------------------------------------------------------------- checkpoints


def _pair(name="resnet18", num_classes=10, **kwargs):
    """(source model with random BN statistics, fresh target model), both in eval mode."""
    torch.manual_seed(0)
    src = _randomize_bn(models.create(name, num_classes=num_classes, **kwargs)).eval()
    torch.manual_seed(1)
    dst = models.create(name, num_classes=num_classes).eval()
    return src, dst


@pytest.mark.parametrize("wrapper", ["model", "state_dict"])
def test_robustness_library_checkpoint_is_converted(tmp_path, wrapper):
    src, dst = _pair(mean=IMAGENET_MEAN, std=IMAGENET_STD)
    sd = {}
    for k, v in src.state_dict().items():
        sd[f"module.model.{k}"] = v.clone()
        # The attacker's copy is deliberately different: loading it instead would change the outputs.
        sd[f"module.attacker.model.{k}"] = v.clone() + 1 if v.is_floating_point() else v.clone()
    for prefix in ("module.normalizer.", "module.attacker.normalize."):
        sd[prefix + "new_mean"] = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
        sd[prefix + "new_std"] = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    path = tmp_path / "resnet18_l2_eps3.ckpt"
    torch.save({wrapper: sd, "epoch": 90} if wrapper == "model" else {wrapper: sd}, path)

    assert dst.normalize.is_identity
    report = models.load_weights(dst, path)
    assert report.format == "robustness" and report.wrapper == wrapper and report.stripped_prefix == "module."
    assert report.normalization_from_file
    torch.testing.assert_close(report.mean, IMAGENET_MEAN)
    torch.testing.assert_close(dst.normalize.mean, torch.tensor(IMAGENET_MEAN))
    torch.testing.assert_close(dst.normalize.std, torch.tensor(IMAGENET_STD))
    assert sorted(report.loaded) == sorted(src.state_dict())
    assert all(k.startswith(("module.attacker.", "module.normalizer.")) for k in report.skipped)
    assert len(report.skipped) == len(src.state_dict()) + 4
    x = _input("resnet18", 3)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_dataparallel_and_training_checkpoints_load(tmp_path):
    src, dst = _pair("resnet8")
    dp = {f"module.{k}": v for k, v in src.state_dict().items()}
    report = models.load_weights(dst, dp)
    assert report.format == "dataparallel" and report.stripped_prefix == "module." and not report.skipped
    x = _input("resnet8", 3)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)

    _, dst2 = _pair("resnet8")
    path = tmp_path / "train.pt"
    torch.save({"model": src.state_dict(), "optimizer": {"state": {}, "param_groups": []}, "epoch": 3}, path)
    report = models.load_weights(dst2, path)
    assert report.format == "native" and report.wrapper == "model" and not report.normalization_from_file
    torch.testing.assert_close(dst2(x), src(x), rtol=0, atol=0)


def test_explicit_formats_are_checked():
    src, dst = _pair("resnet8")
    with pytest.raises(ValueError, match="format must be one of"):
        models.load_weights(dst, src.state_dict(), format="timm")
    with pytest.raises(ValueError, match="robustness"):
        models.load_weights(dst, src.state_dict(), format="robustness")
    with pytest.raises(ValueError, match="module"):
        models.load_weights(dst, src.state_dict(), format="dataparallel")
    # "native" takes keys literally: a DataParallel prefix is then a mismatch, not something to fix up.
    with pytest.raises(ValueError, match="unexpected keys"):
        models.load_weights(dst, {f"module.{k}": v for k, v in src.state_dict().items()}, format="native")
    assert models.load_weights(dst, src.state_dict(), format="torchvision").format == "native"


_CALLS: list[str] = []


def _record_call(tag: str) -> str:
    _CALLS.append(tag)
    return tag


class _Payload:
    """Unpickling this runs _record_call: what a malicious checkpoint would do with os.system."""

    def __reduce__(self):
        return (_record_call, ("unpickled",))


def test_checkpoints_with_arbitrary_objects_are_refused(tmp_path):
    src, dst = _pair("resnet8")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    path = tmp_path / "evil.pt"
    torch.save({"model": src.state_dict(), "extra": _Payload()}, path)
    _CALLS.clear()
    with pytest.raises(ValueError, match="weights_only=True"):
        models.load_weights(dst, path)
    assert _CALLS == []
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())
    # The payload is live: a plain unpickling runs it (so the assertion above can fail).
    torch.load(path, weights_only=False)
    assert _CALLS == ["unpickled"]


def test_unreadable_and_odd_checkpoints_give_clear_errors(tmp_path):
    _, dst = _pair("resnet8")
    with pytest.raises(FileNotFoundError):
        models.load_weights(dst, tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="could not read"):
        models.load_weights(dst, tmp_path / "junk.pt")
    with pytest.raises(ValueError, match="no state dict found"):
        models.load_weights(dst, {"epoch": 3, "config": {"lr": 0.1}})
    with pytest.raises(TypeError, match="path_or_state_dict"):
        models.load_weights(dst, 42)


def test_mismatch_errors_list_missing_unexpected_and_shapes():
    torch.manual_seed(0)
    model = models.create("resnet18", num_classes=10)
    other = models.create("preact_resnet18", num_classes=1000).state_dict()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as err:
        models.load_weights(model, other)
    msg = str(err.value)
    # BN step counters are not weights (checkpoints before PyTorch 0.4 lack them): never reported missing.
    missing = [k for k in model.state_dict() if k not in other and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in other if k not in model.state_dict()]
    assert len(missing) == 19 and len(unexpected) == 8
    assert "missing keys (in the model, not in the file) (19): bn1.weight, bn1.bias," in msg
    assert "... and 9 more" in msg and missing[10] not in msg  # long lists are truncated
    assert "unexpected keys (in the file, not in the model) (8): " + ", ".join(unexpected) + "\n" in msg
    assert "shape mismatches (model shape vs file shape) (15): conv1.weight: [64, 3, 7, 7] vs [64, 3, 3, 3]," in msg
    assert "... and 5 more" in msg and "conv1 differs" in msg
    assert "the head differs (fc.weight: [10, 512] vs [1000, 512]; fc.bias: [10] vs [1000])" in msg and "exclude_head=True" in msg
    # Nothing was modified by the failed load.
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())


def test_non_strict_loading_reports_what_was_missing_and_skipped():
    src, dst = _pair("resnet8")
    sd = dict(src.state_dict())
    del sd["layer3.0.conv2.weight"]
    sd["extra.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match="layer3.0.conv2.weight"):
        models.load_weights(dst, sd)
    old = dst.layer3[0].conv2.weight.detach().clone()
    report = models.load_weights(dst, sd, strict=False)
    assert report.missing == ["layer3.0.conv2.weight"] and report.skipped == ["extra.weight"]
    assert torch.equal(dst.layer3[0].conv2.weight, old)
    assert torch.equal(dst.layer3[0].conv1.weight, src.layer3[0].conv1.weight)
    # Shapes must match even when not strict.
    sd["conv1.weight"] = torch.zeros(16, 3, 5, 5)
    with pytest.raises(ValueError, match="shape mismatches"):
        models.load_weights(dst, sd, strict=False)


def test_old_checkpoints_without_num_batches_tracked_load_strictly():
    src, dst = _pair("resnet8")
    sd = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    report = models.load_weights(dst, sd)
    assert report.missing and all(k.endswith("num_batches_tracked") for k in report.missing)
    x = _input("resnet8", 3)
    torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)


def test_exclude_head_loads_the_backbone_for_a_new_label_set():
    src, _ = _pair("resnet18", num_classes=10)
    torch.manual_seed(2)
    dst = models.create("resnet18", num_classes=5).eval()
    with pytest.raises(ValueError, match=r"fc\.weight: \[5, 512\] vs \[10, 512\]"):
        models.load_weights(dst, src.state_dict())
    head = {k: v.clone() for k, v in dst.fc.state_dict().items()}
    report = models.load_weights(dst, src.state_dict(), exclude_head=True)
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"] and not report.missing
    assert all(torch.equal(v, head[k]) for k, v in dst.fc.state_dict().items())
    x = _input("resnet18", 3)
    with torch.no_grad():
        torch.testing.assert_close(dst.forward_features(x), src.forward_features(x), rtol=0, atol=0)


def test_save_load_round_trip_is_exact_with_normalisation(tmp_path):
    src, dst = _pair("resnet18_small", mean=[0.49, 0.48, 0.45], std=[0.25, 0.24, 0.26])
    path = models.save_weights(src, tmp_path / "ckpt" / "best.pt")  # creates the folder
    assert path == tmp_path / "ckpt" / "best.pt"
    assert sorted(os.listdir(path.parent)) == ["best.pt"]  # no temporary file left behind
    report = models.load_weights(dst, path)
    assert report.format == "native" and report.normalization_from_file and not report.missing
    src_sd, dst_sd = src.state_dict(), dst.state_dict()
    assert list(src_sd) == list(dst_sd)
    assert all(torch.equal(src_sd[k], dst_sd[k]) and src_sd[k].dtype == dst_sd[k].dtype for k in src_sd)
    assert torch.equal(dst.normalize.mean, src.normalize.mean) and torch.equal(dst.normalize.std, src.normalize.std)
    x = _input("resnet18_small", 3)
    with torch.no_grad():
        torch.testing.assert_close(dst(x), src(x), rtol=0, atol=0)
    # An identity normalisation round-trips too (it overrides the target's).
    plain = models.create("resnet18_small", num_classes=10)
    models.save_weights(plain, path)
    models.load_weights(dst, path)
    assert dst.normalize.is_identity
    assert sorted(os.listdir(path.parent)) == ["best.pt"]


def test_save_weights_failure_keeps_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    src, _ = _pair("resnet8")
    path = tmp_path / "w.pt"
    models.save_weights(src, path)
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        models.save_weights(models.create("resnet8", num_classes=10), path)
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["w.pt"]


def test_atomically_written_files_get_the_usual_permissions_not_the_temporary_files(tmp_path):
    """A results file or checkpoint is readable by whoever could read a file written with open()."""
    old = os.umask(0o022)
    try:
        models.save_weights(models.create("resnet8", num_classes=10), tmp_path / "w.pt")
        (tmp_path / "plain").write_bytes(b"")
    finally:
        os.umask(old)
    assert (tmp_path / "w.pt").stat().st_mode & 0o777 == (tmp_path / "plain").stat().st_mode & 0o777 == 0o644


def test_input_size_resizes_inside_the_model_and_grey_images_feed_rgb_weights():
    torch.manual_seed(0)
    model = _randomize_bn(models.create("resnet18", num_classes=4, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                                        input_size=64)).eval()
    assert model.input_size == 64
    grey = torch.rand(2, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    # What a user would otherwise do by hand: resize, repeat the grey channel, then the model.
    by_hand = nn.functional.interpolate(grey, size=(64, 64), mode="bilinear", align_corners=False).expand(-1, 3, -1, -1)
    model.input_size = None
    with torch.no_grad():
        expected = model(by_hand.contiguous())
    model.input_size = 64
    x = grey.clone().requires_grad_(True)
    logits = model(x)
    torch.testing.assert_close(logits.detach(), expected)
    logits.sum().backward()
    assert x.grad.shape == grey.shape and bool(x.grad.abs().sum() > 0)  # attacks stay in the 28x28x1 space
    with pytest.raises(ValueError, match="input_size"):
        models.create("resnet18", num_classes=4, input_size=0)


def test_a_two_channel_input_to_an_rgb_model_is_still_an_error():
    model = models.create("resnet18", num_classes=4, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    with pytest.raises(ValueError, match="3 channels"):
        model(torch.rand(1, 2, 32, 32))


def test_wrn50_is_an_alias_of_wide_resnet50_2():
    model = models.create("wrn50", num_classes=3)
    assert model.arch == "wide_resnet50_2" == models.canonical_name("wrn50")
    assert list(model.state_dict()) == list(models.create("wide_resnet50_2", num_classes=3).state_dict())


def test_find_torchvision_weights_looks_in_the_local_cache_only(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(FileNotFoundError, match=r"resnet18-<hash>\.pth.*pass the weights file's path"):
        models.find_torchvision_weights("resnet18")
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    src = _randomize_bn(models.create("resnet18", num_classes=1000))
    torch.save(src.state_dict(), cache / "resnet18-0123abcd.pth")  # how torchvision stores them: a bare state dict
    path = models.find_torchvision_weights("resnet18")
    assert path == cache / "resnet18-0123abcd.pth"
    dst = models.create("resnet18", num_classes=1000)
    models.load_weights(dst, path)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True))
    torch.save({}, cache / "wide_resnet50_2-1.pth")
    torch.save({}, cache / "wide_resnet50_2-2.pth")
    with pytest.raises(ValueError, match="several torchvision weights"):
        models.find_torchvision_weights("wrn50")


# ------------------------------------------------------------------------------------- verified files


def _flip(path: Path, position: int, out: Path) -> Path:
    """A copy of ``path`` with the byte at ``position`` inverted."""
    data = bytearray(path.read_bytes())
    data[position] ^= 0xFF
    out.write_bytes(bytes(data))
    return out


def test_a_weights_file_with_a_flipped_byte_never_loads_changed_weights(tmp_path):
    """torch.load skips the CRC-32 of every record of torch's zip archive: a flipped byte inside a tensor
    loaded silently as a changed weight. Every load is verified now: each of 60 flips spread over the
    file either raises a ValueError naming the file as corrupt, or (a flip in the archive's padding or
    an unchecked header field) loads exactly the original tensors."""
    src, _ = _pair("resnet8", mean=[0.5, 0.4, 0.3], std=[0.2, 0.25, 0.3])
    path = models.save_weights(src, tmp_path / "w.pt")
    size = path.stat().st_size
    expected = src.state_dict()
    refused = 0
    for i, position in enumerate(sorted({round(k * (size - 1) / 59) for k in range(60)})):
        _, dst = _pair("resnet8")
        before = {k: v.clone() for k, v in dst.state_dict().items()}
        bad = _flip(path, position, tmp_path / f"flipped{i}.pt")
        try:
            models.load_weights(dst, bad)
        except ValueError as error:
            assert f"flipped{i}.pt" in str(error) and "corrupt" in str(error), (position, str(error))
            assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items()), "changed before refusing"
            refused += 1
            continue
        for key, value in dst.state_dict().items():
            assert torch.equal(value, expected[key]), f"flip at byte {position} of {size} changed {key} silently"
        assert torch.equal(dst.normalize.std, src.normalize.std)
    assert refused >= 50, refused  # measured: 58 of 60 (most of the file is tensor data or checksummed)


def test_a_legacy_torch_file_loads_with_a_warning_that_it_cannot_be_verified(tmp_path):
    src, dst = _pair("resnet8")
    path = tmp_path / "legacy.pt"
    torch.save(src.state_dict(), path, _use_new_zipfile_serialization=False)
    from nonrobust_ext._io import UnverifiedFileWarning

    with pytest.warns(UnverifiedFileWarning, match="legacy.pt.*no checksums"):
        models.load_weights(dst, path)
    assert all(torch.equal(v, src.state_dict()[k]) for k, v in dst.state_dict().items())


def test_nan_weights_are_neither_loaded_nor_saved(tmp_path):
    src, dst = _pair("resnet8")
    before = {k: v.clone() for k, v in dst.state_dict().items()}
    bad = {k: v.clone() for k, v in src.state_dict().items()}
    bad["layer1.0.bn1.running_var"][3] = float("nan")
    with pytest.raises(ValueError, match=r"layer1\.0\.bn1\.running_var holds 1 NaN value"):
        models.load_weights(dst, bad)
    assert all(torch.equal(v, before[k]) for k, v in dst.state_dict().items())
    with torch.no_grad():
        src.fc.weight[0, 0] = float("inf")
    with pytest.raises(ValueError, match=r"fc\.weight holds 1 infinite value"):
        models.save_weights(src, tmp_path / "w.pt")
    assert not (tmp_path / "w.pt").exists()
