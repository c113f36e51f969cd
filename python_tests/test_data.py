"""nonrobust_ext.data: IDX / Fashion-MNIST / CIFAR / image-folder readers, the synthetic task,
source/target splits, few-shot sets and batching. Every file a test reads, it writes itself (except
the real Fashion-MNIST check, shown as skipped when the Debian package is not installed)."""

from __future__ import annotations

import gzip
import importlib
import math
import os
import pickle
import struct
import sys
from pathlib import Path

import pytest
import torch
from _helpers import fake_cifar10

from nonrobust_ext import data

fmnist_module = importlib.import_module("nonrobust_ext.data.fmnist")

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")
FMNIST_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}

# ---------------------------------------------------------------------------------------------
# helpers


_IDX_CODES = {torch.uint8: (0x08, "B"), torch.int8: (0x09, "b"), torch.int16: (0x0B, "h"),
              torch.int32: (0x0C, "i"), torch.float32: (0x0D, "f"), torch.float64: (0x0E, "d")}


def idx_bytes(t: torch.Tensor) -> bytes:
    """An IDX file's bytes for ``t``, written independently of the reader (struct, big-endian)."""
    code, fmt = _IDX_CODES[t.dtype]
    header = bytes([0, 0, code, t.dim()]) + struct.pack(f">{t.dim()}I", *t.shape)
    return header + struct.pack(f">{t.numel()}{fmt}", *t.flatten().tolist())


def write_idx(path: Path, t: torch.Tensor, *, gz: bool = False) -> Path:
    raw = idx_bytes(t)
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


def fake_fmnist(folder: Path, n_train: int = 20, n_test: int = 10, *, gz: bool = True) -> dict[str, torch.Tensor]:
    """Tiny Fashion-MNIST files with the real names; returns the uint8 images and labels written."""
    folder.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(0)
    out = {}
    for split, n in (("train", n_train), ("test", n_test)):
        images = torch.randint(0, 256, (n, 28, 28), generator=g, dtype=torch.uint8)
        labels = (torch.arange(n) % 10).to(torch.uint8)
        img_name, lbl_name = FMNIST_FILES[split]
        suffix = ".gz" if gz else ""
        write_idx(folder / (img_name + suffix), images, gz=gz)
        write_idx(folder / (lbl_name + suffix), labels, gz=gz)
        out[split + "_x"], out[split + "_y"] = images, labels
    return out


def id_dataset(n: int, num_classes: int, *, offset: int = 0) -> data.TensorData:
    """A set whose pixel (0, 0, 0) encodes a sample id (exact in float32), labels ``i % num_classes``."""
    ids = torch.arange(offset, offset + n)
    x = torch.zeros(n, 1, 2, 2)
    x[:, 0, 0, 0] = ids.float() / 4096
    y = ids % num_classes
    return data.TensorData(x, y, [f"c{k}" for k in range(num_classes)])


def ids_of(d: data.TensorData | torch.Tensor) -> torch.Tensor:
    x = d.x if isinstance(d, data.TensorData) else d
    return (x[:, 0, 0, 0] * 4096).round().long()


# ---------------------------------------------------------------------------------------------
# TensorData


def test_tensor_data_checks_and_methods():
    d = id_dataset(12, 3)
    assert len(d) == 12 and d.num_classes == 3
    sub = d.subset(torch.tensor([5, 1]))
    assert ids_of(sub).tolist() == [5, 1] and sub.y.tolist() == [2, 1] and sub.classes == d.classes
    assert len(d.subset(d.y == 0)) == 4
    assert len(d.subset([])) == 0
    assert d.to("cpu").x.device.type == "cpu"
    assert "n=12" in repr(d)
    with pytest.raises(TypeError, match="floating-point"):
        data.TensorData(torch.zeros(2, 1, 2, 2, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ["a"])
    with pytest.raises(TypeError, match="int64"):
        data.TensorData(torch.zeros(2, 1, 2, 2), torch.zeros(2, dtype=torch.int32), ["a"])
    with pytest.raises(ValueError, match=r"\[N\] = \[2\]"):
        data.TensorData(torch.zeros(2, 1, 2, 2), torch.zeros(3, dtype=torch.int64), ["a"])
    with pytest.raises(ValueError, match="N, C, H, W"):
        data.TensorData(torch.zeros(2, 4), torch.zeros(2, dtype=torch.int64), ["a"])
    with pytest.raises(ValueError, match="labels in 0..1"):
        data.TensorData(torch.zeros(2, 1, 2, 2), torch.tensor([0, 2]), ["a", "b"])


# ---------------------------------------------------------------------------------------------
# read_idx


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gz"])
def test_read_idx_round_trip_images_and_labels(tmp_path, gz):
    images = torch.randint(0, 256, (7, 5, 3), dtype=torch.uint8)
    labels = torch.randint(0, 10, (7,), dtype=torch.uint8)
    # The name does not say gzip: the reader must tell by content.
    got_x = data.read_idx(write_idx(tmp_path / "images", images, gz=gz))
    got_y = data.read_idx(write_idx(tmp_path / "labels", labels, gz=gz))
    assert got_x.dtype == torch.uint8 and got_x.shape == (7, 5, 3) and torch.equal(got_x, images)
    assert got_y.shape == (7,) and torch.equal(got_y, labels)
    assert data.read_idx(str(tmp_path / "labels")).shape == (7,)  # str paths too


@pytest.mark.parametrize("dtype", [torch.int8, torch.int16, torch.int32, torch.float32, torch.float64])
def test_read_idx_multibyte_types_are_big_endian(tmp_path, dtype):
    if dtype.is_floating_point:
        t = torch.tensor([[1.5, -2.25, 3e10], [0.0, -1e-3, 7.0]], dtype=dtype)
    else:
        info = torch.iinfo(dtype)
        t = torch.tensor([[info.min, -1, 0], [1, 300 % info.max, info.max]], dtype=dtype)
    got = data.read_idx(write_idx(tmp_path / "t.idx", t))
    assert got.dtype == dtype and torch.equal(got, t)
    scalar = data.read_idx(write_idx(tmp_path / "s.idx", torch.tensor(5, dtype=dtype)))
    assert scalar.shape == () and scalar.item() == 5


def test_read_idx_errors_name_the_file(tmp_path):
    good = idx_bytes(torch.zeros(4, 3, 3, dtype=torch.uint8))
    bad_magic = tmp_path / "bad_magic.idx"
    bad_magic.write_bytes(b"\x01\x02" + good[2:])
    with pytest.raises(ValueError, match=r"bad_magic\.idx is not an IDX file"):
        data.read_idx(bad_magic)
    bad_code = tmp_path / "bad_code.idx"
    bad_code.write_bytes(b"\x00\x00\x07" + good[3:])
    with pytest.raises(ValueError, match=r"bad_code\.idx is not an IDX file"):
        data.read_idx(bad_code)
    truncated = tmp_path / "truncated.idx"
    truncated.write_bytes(good[:-5])
    with pytest.raises(ValueError, match=r"truncated\.idx is truncated.*needs 36 data bytes, found 31"):
        data.read_idx(truncated)
    short_header = tmp_path / "short_header.idx"
    short_header.write_bytes(good[:9])
    with pytest.raises(ValueError, match=r"short_header\.idx is truncated.*3 dimensions"):
        data.read_idx(short_header)
    too_long = tmp_path / "too_long.idx"
    too_long.write_bytes(good + b"\x00")
    with pytest.raises(ValueError, match=r"too_long\.idx is longer than its header says"):
        data.read_idx(too_long)
    bad_gz = tmp_path / "cut.gz"
    bad_gz.write_bytes(gzip.compress(good)[:-10])
    with pytest.raises(ValueError, match=r"cut\.gz is a damaged or truncated gzip file"):
        data.read_idx(bad_gz)
    with pytest.raises(FileNotFoundError, match="missing.idx"):
        data.read_idx(tmp_path / "missing.idx")


# ---------------------------------------------------------------------------------------------
# Fashion-MNIST


@pytest.mark.parametrize("gz", [True, False], ids=["gz", "plain"])
def test_fashion_mnist_from_root(tmp_path, gz):
    written = fake_fmnist(tmp_path / "fashion-mnist", gz=gz)
    train = data.fashion_mnist(tmp_path / "fashion-mnist")
    test = data.fashion_mnist(str(tmp_path / "fashion-mnist"), train=False)
    assert train.x.shape == (20, 1, 28, 28) and test.x.shape == (10, 1, 28, 28)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert torch.equal(train.x[:, 0], written["train_x"].float() / 255)
    assert torch.equal(test.y, written["test_y"].long())
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot" and train.num_classes == 10
    # A data folder holding a fashion-mnist subfolder works as root too.
    assert len(data.fashion_mnist(tmp_path)) == 20


def test_fashion_mnist_env_var_is_searched_first(tmp_path, monkeypatch):
    fake_fmnist(tmp_path / "store" / "fashion-mnist", n_train=30)
    monkeypatch.setenv("NONROBUST_EXT_DATA", str(tmp_path / "store"))
    assert len(data.fashion_mnist()) == 30  # found before the system location, which has 60000
    assert len(data.load("fashion-mnist", train=False)) == 10


def test_fashion_mnist_missing_says_how_to_get_it(tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    nowhere = tmp_path / "no-system-data"
    monkeypatch.setenv("NONROBUST_EXT_DATA", str(empty))
    # The real package may be installed here: point the system location elsewhere.
    monkeypatch.setattr(fmnist_module, "SYSTEM_DIRS", (str(nowhere),))
    with pytest.raises(FileNotFoundError) as info:
        data.fashion_mnist()
    msg = str(info.value)
    assert "apt-get install dataset-fashion-mnist" in msg
    assert str(empty) in msg and str(empty / "fashion-mnist") in msg and str(nowhere) in msg
    assert "zalandoresearch/fashion-mnist" in msg and "NONROBUST_EXT_DATA" in msg and "synthetic" in msg
    # Only one of the two files present is still "not found", and the explicit root is what is searched.
    write_idx(empty / "train-images-idx3-ubyte", torch.zeros(2, 28, 28, dtype=torch.uint8))
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist") as info:
        data.fashion_mnist(root=empty)
    assert str(nowhere) not in str(info.value)


def test_fashion_mnist_mismatched_files(tmp_path):
    fake_fmnist(tmp_path)
    write_idx(tmp_path / "train-labels-idx1-ubyte.gz", torch.zeros(19, dtype=torch.uint8), gz=True)
    with pytest.raises(ValueError, match="19 labels.*20 images"):
        data.fashion_mnist(tmp_path)


_HAVE_REAL = all((DEBIAN_FMNIST / (n + ".gz")).is_file() for names in FMNIST_FILES.values() for n in names)


@pytest.mark.skipif(not _HAVE_REAL, reason="needs the Debian package dataset-fashion-mnist (apt-get install)")
def test_fashion_mnist_real_debian_data(monkeypatch):
    monkeypatch.delenv("NONROBUST_EXT_DATA", raising=False)
    train, test = data.fashion_mnist(), data.fashion_mnist(train=False)
    assert len(train) == 60000 and len(test) == 10000
    assert train.x.shape == (60000, 1, 28, 28) and test.x.shape == (10000, 1, 28, 28)
    assert float(train.x.min()) == 0.0 and float(train.x.max()) == 1.0
    assert torch.equal(train.y.bincount(), torch.full((10,), 6000))
    assert torch.equal(test.y.bincount(), torch.full((10,), 1000))
    assert 0.2 < float(train.x.mean()) < 0.4  # Fashion-MNIST's mean intensity is about 0.286


# ---------------------------------------------------------------------------------------------
# source/target splits and few-shot sets


def make_split(seed=0, shots=None, val=None, n_train=600, n_test=200, num_classes=6, src=(4, 0, 2), tgt=(5, 1)):
    train = id_dataset(n_train, num_classes)
    test = id_dataset(n_test, num_classes, offset=n_train)
    return train, test, data.source_target_split(
        train, test, source_classes=list(src), target_classes=list(tgt), shots_per_class=shots,
        val_per_class=val, seed=seed,
    )


def test_split_relabels_and_keeps_sides_apart():
    train, test, s = make_split(shots=7)
    assert s.source_classes == [4, 0, 2] and s.target_classes == [5, 1]
    assert s.source_train.classes == ["c4", "c0", "c2"] and s.target_test.classes == ["c5", "c1"]
    for part, classes in (("source", s.source_classes), ("target", s.target_classes)):
        for which in ("train", "val", "test"):
            d = getattr(s, f"{part}_{which}")
            assert d.num_classes == len(classes)
            original = ids_of(d) % 6  # the original label of each sample, from its id
            # new label k must be original class classes[k]
            assert torch.equal(original, torch.tensor(classes)[d.y]), (part, which)
    src_ids = torch.cat([ids_of(getattr(s, f"source_{w}")) for w in ("train", "val", "test")])
    tgt_ids = torch.cat([ids_of(getattr(s, f"target_{w}")) for w in ("train", "val", "test")])
    assert not set(src_ids.tolist()) & set(tgt_ids.tolist())
    # Test sets are the whole test set of each side's classes, and only test samples.
    assert sorted(ids_of(s.source_test).tolist()) == [i for i in range(600, 800) if i % 6 in (4, 0, 2)]
    assert sorted(ids_of(s.target_test).tolist()) == [i for i in range(600, 800) if i % 6 in (5, 1)]


def test_split_validation_is_carved_from_train():
    _, _, s = make_split(shots=7)
    for side in ("source", "target"):
        tr, va = ids_of(getattr(s, f"{side}_train")), ids_of(getattr(s, f"{side}_val"))
        assert len(va) > 0
        assert not set(tr.tolist()) & set(va.tolist()), side  # disjoint from training samples
        assert bool((va < 600).all()), side  # drawn from the train set, never from test
    # Defaults: 100 images per class: source min(100, n_c // 2) = 50; target min(50, n_c - shots) = 50.
    assert torch.equal(s.source_val.y.bincount(), torch.full((3,), 50))
    assert torch.equal(s.target_val.y.bincount(), torch.full((2,), 50))
    # Without shots the source keeps everything validation leaves.
    assert torch.equal(s.source_train.y.bincount(), torch.full((3,), 50))
    # Explicit counts, per side.
    _, _, s2 = make_split(shots=5, val=(10, 3))
    assert torch.equal(s2.source_val.y.bincount(), torch.full((3,), 10))
    assert torch.equal(s2.source_train.y.bincount(), torch.full((3,), 90))
    assert torch.equal(s2.target_val.y.bincount(), torch.full((2,), 3))


def test_split_shots_per_class_exact_and_nested():
    _, _, s = make_split(shots=7)
    assert torch.equal(s.target_train.y.bincount(), torch.full((2,), 7))
    _, _, big = make_split(shots=20, val=(10, 10))
    _, _, small = make_split(shots=5, val=(10, 10))
    assert set(ids_of(small.target_train).tolist()) < set(ids_of(big.target_train).tolist())
    assert torch.equal(ids_of(small.target_val), ids_of(big.target_val))


def test_split_deterministic_per_seed_and_different_across_seeds():
    _, _, a = make_split(seed=3, shots=5)
    _, _, b = make_split(seed=3, shots=5)
    _, _, c = make_split(seed=4, shots=5)
    for name in ("source_train", "source_val", "target_train", "target_val"):
        assert torch.equal(ids_of(getattr(a, name)), ids_of(getattr(b, name))), name
        assert not torch.equal(ids_of(getattr(a, name)), ids_of(getattr(c, name))), name
        assert torch.equal(getattr(a, name).x, getattr(b, name).x)


def test_a_split_without_source_classes_is_the_target_task_alone():
    train, test = id_dataset(60, 6), id_dataset(30, 6)
    alone = data.source_target_split(train, test, source_classes=[], target_classes=[4, 1], shots_per_class=3, seed=2)
    paired = data.source_target_split(train, test, source_classes=[0], target_classes=[4, 1], shots_per_class=3,
                                      seed=2)
    for name in ("source_train", "source_val", "source_test"):
        assert len(getattr(alone, name)) == 0 and getattr(alone, name).classes == []
    for name in ("target_train", "target_val", "target_test"):  # the same draw as with a source side
        assert torch.equal(getattr(alone, name).x, getattr(paired, name).x), name
        assert torch.equal(getattr(alone, name).y, getattr(paired, name).y), name
    assert len(alone.target_train) == 6 and alone.target_train.classes == [train.classes[4], train.classes[1]]


def test_split_errors():
    train, test = id_dataset(60, 6), id_dataset(30, 6)
    split = data.source_target_split
    with pytest.raises(ValueError, match=r"disjoint, both contain \[2\]"):
        split(train, test, source_classes=[0, 1, 2], target_classes=[2, 3])
    with pytest.raises(ValueError, match="target_classes must not be empty"):
        split(train, test, source_classes=[2, 3], target_classes=[])
    with pytest.raises(ValueError, match=r"target_classes must hold class ids in 0\.\.5, got \[6\]"):
        split(train, test, source_classes=[0], target_classes=[6])
    with pytest.raises(ValueError, match=r"target_classes lists classes more than once: \[3\]"):
        split(train, test, source_classes=[0], target_classes=[3, 3])
    with pytest.raises(ValueError, match="shots_per_class=11 but target class 3"):
        split(train, test, source_classes=[0], target_classes=[3], shots_per_class=11)
    with pytest.raises(ValueError, match="val_per_class=10 needs 11 training samples per class, but source class 0"):
        split(train, test, source_classes=[0], target_classes=[3], val_per_class=10)
    with pytest.raises(ValueError, match="same classes"):
        split(train, id_dataset(30, 5), source_classes=[0], target_classes=[3])
    with pytest.raises(ValueError, match="shots_per_class must be >= 1"):
        split(train, test, source_classes=[0], target_classes=[3], shots_per_class=0)


def test_few_shot():
    d = id_dataset(90, 3)
    a = data.few_shot(d, 4, seed=1)
    assert torch.equal(a.y.bincount(), torch.full((3,), 4)) and a.classes == d.classes
    assert torch.equal(ids_of(a) % 3, a.y)  # labels kept
    assert torch.equal(ids_of(a), ids_of(data.few_shot(d, 4, seed=1)))
    assert not torch.equal(ids_of(a), ids_of(data.few_shot(d, 4, seed=2)))
    assert set(ids_of(a).tolist()) < set(ids_of(data.few_shot(d, 10, seed=1)).tolist())
    with pytest.raises(ValueError, match=r"shots_per_class=31 but class 0 \('c0'\) has only 30"):
        data.few_shot(d, 31)


# ---------------------------------------------------------------------------------------------
# batches


def epoch_ids(d, batch_size, **kw):
    return [ids_of(x) for x, _ in data.batches(d, batch_size, **kw)]


@pytest.mark.parametrize("n", [50, 53])
def test_batches_cover_every_sample_once(n):
    d = id_dataset(n, 5)
    got = epoch_ids(d, 8, shuffle=True, seed=1, epoch=0)
    assert [len(b) for b in got[:-1]] == [8] * (len(got) - 1) and len(got) == math.ceil(n / 8)
    flat = torch.cat(got)
    assert sorted(flat.tolist()) == list(range(n))
    assert flat.tolist() != list(range(n))  # shuffled
    for x, y in data.batches(d, 8, shuffle=True):
        assert torch.equal(ids_of(data.TensorData(x, y, d.classes)) % 5, y)  # x and y stay paired
    assert torch.cat(epoch_ids(d, 8, shuffle=False)).tolist() == list(range(n))
    dropped = epoch_ids(d, 8, shuffle=True, drop_last=True)
    assert [len(b) for b in dropped] == [8] * (n // 8)


def test_batches_order_is_a_function_of_seed_and_epoch():
    d = id_dataset(40, 4)
    state = torch.random.get_rng_state()
    a = torch.cat(epoch_ids(d, 16, shuffle=True, seed=7, epoch=3))
    torch.manual_seed(12345)  # the global RNG must not matter ...
    b = torch.cat(epoch_ids(d, 16, shuffle=True, seed=7, epoch=3))
    assert torch.equal(a, b)
    torch.random.set_rng_state(state)
    # ... nor be consumed
    torch.cat(epoch_ids(d, 16, shuffle=True, seed=7, epoch=3))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not torch.equal(a, torch.cat(epoch_ids(d, 16, shuffle=True, seed=7, epoch=4)))
    assert not torch.equal(a, torch.cat(epoch_ids(d, 16, shuffle=True, seed=8, epoch=3)))


@pytest.mark.parametrize("n,world_size,drop_last", [(50, 4, False), (50, 4, True), (48, 3, False), (5, 8, False)])
def test_batches_rank_sharding(n, world_size, drop_last):
    d = id_dataset(n, 5)
    per_rank = [epoch_ids(d, 4, shuffle=True, seed=2, epoch=1, rank=r, world_size=world_size, drop_last=drop_last)
                for r in range(world_size)]
    counts = {len(b) for b in per_rank}
    assert len(counts) == 1, f"ranks yield different batch counts: {[len(b) for b in per_rank]}"
    assert counts.pop() == data.num_batches(n, 4, world_size=world_size, drop_last=drop_last)
    seen = torch.cat([torch.cat(b) for b in per_rank if b])
    if drop_last:
        assert len(set(seen.tolist())) == len(seen)  # nothing seen twice
        assert len(seen) == (n // world_size) // 4 * 4 * world_size
    else:
        assert set(seen.tolist()) == set(range(n))  # everything covered
        assert len(seen) == math.ceil(n / world_size) * world_size  # padded by wrapping only
    # The shards interleave one shared permutation.
    full = data.epoch_order(n, shuffle=True, seed=2, epoch=1)
    if not drop_last:
        padded = full.repeat(world_size)[: math.ceil(n / world_size) * world_size]
        assert torch.equal(torch.cat(per_rank[0]), padded[0::world_size])


def test_batches_argument_errors():
    d = id_dataset(10, 2)
    with pytest.raises(ValueError, match="rank must be < world_size"):
        data.batches(d, 4, shuffle=True, rank=2, world_size=2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        data.batches(d, 0, shuffle=True)
    with pytest.raises(ValueError, match="epoch must be >= 0"):
        data.batches(d, 4, shuffle=True, epoch=-1)


# ---------------------------------------------------------------------------------------------
# CIFAR


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_cifar10_reader(tmp_path, protocol):
    images = fake_cifar10(tmp_path, protocol=protocol)
    train = data.cifar(tmp_path, name="cifar10")
    test = data.load("cifar10", root=tmp_path / "cifar-10-batches-py", train=False)
    assert train.x.shape == (15, 3, 32, 32) and test.x.shape == (3, 3, 32, 32)
    assert torch.equal(train.x, images[:15].float() / 255)  # channel-first planes, not interleaved
    assert torch.equal(test.x, images[15:].float() / 255)
    assert train.y.tolist()[:4] == [0, 1, 2, 1] and test.y.tolist() == [5, 6, 7]
    assert train.classes[1] == "automobile" and train.num_classes == 10


def test_cifar100_reader_uses_fine_labels(tmp_path):
    np = pytest.importorskip("numpy")
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 4), ("test", 2)):
        batch = {b"data": np.full((n, 3072), 7, dtype=np.uint8), b"fine_labels": list(range(90, 90 + n)),
                 b"coarse_labels": [0] * n}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}
    (folder / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    train = data.cifar(tmp_path, name="cifar100")
    assert train.y.tolist() == [90, 91, 92, 93] and train.num_classes == 100 and train.classes[93] == "fine93"
    assert len(data.cifar(tmp_path, name="cifar100", train=False)) == 2


def _py2_cifar_pickle(images: bytes, n: int, labels: list[int]) -> bytes:
    """A batch pickled the way the official files are: Python 2, protocol 2, py2 ``str`` (opcode U/T)
    for keys and buffers, numpy arrays through ``numpy.core.multiarray._reconstruct`` (numpy 1
    spelling). Assembled opcode by opcode, since Python 3 cannot write py2 strings."""

    def s(b: bytes) -> bytes:  # SHORT_BINSTRING
        return b"U" + bytes([len(b)]) + b

    def k(i: int) -> bytes:  # BININT1 / BININT2
        return b"K" + bytes([i]) if i < 256 else b"M" + struct.pack("<H", i)

    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + k(0) + k(1) + b"\x87R"  # dtype('u1', 0, 1)
             + b"(" + k(3) + s(b"|") + b"NNN" + b"J\xff\xff\xff\xff" * 2 + k(0) + b"tb")  # __setstate__
    array = (b"cnumpy.core.multiarray\n_reconstruct\n" + b"cnumpy\nndarray\n" + k(0) + b"\x85" + s(b"b")
             + b"\x87R"  # _reconstruct(ndarray, (0,), 'b')
             + b"(" + k(1) + b"(" + k(n) + k(3072) + b"t" + dtype + b"\x89"  # state: version, shape, dtype, False
             + b"T" + struct.pack("<I", len(images)) + images + b"tb")  # raw bytes; BUILD
    label_list = b"](" + b"".join(k(v) for v in labels) + b"e"
    return b"\x80\x02}(" + s(b"data") + array + s(b"labels") + label_list + b"u."


def test_cifar_reads_python2_pickles(tmp_path):
    pytest.importorskip("numpy")
    folder = tmp_path / "cifar-10-batches-py"
    fake_cifar10(tmp_path, per_batch=2)
    images = bytes((i * 7) % 256 for i in range(2 * 3072))
    (folder / "test_batch").write_bytes(_py2_cifar_pickle(images, 2, [3, 9]))
    test = data.cifar(tmp_path, train=False)
    assert test.y.tolist() == [3, 9]
    expected = torch.tensor(list(images), dtype=torch.uint8).view(2, 3, 32, 32)
    assert torch.equal(test.x, expected.float() / 255)


class _Exploit:
    """Pickles as a call to os.system: what a malicious "dataset" file looks like."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_cifar_restricted_unpickler_refuses_os_system(tmp_path):
    fake_cifar10(tmp_path)
    marker = tmp_path / "pwned"
    evil = {b"data": _Exploit(marker), b"labels": [0]}
    path = tmp_path / "cifar-10-batches-py" / "data_batch_3"
    path.write_bytes(pickle.dumps(evil))
    assert b"system" in path.read_bytes()
    with pytest.raises(pickle.UnpicklingError, match=r"data_batch_3: refusing to unpickle the global '\w+\.system'"):
        data.cifar(tmp_path)
    assert not marker.exists()
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        data.safe_load(path)
    # A pickled class from some module is refused too.
    (tmp_path / "cls").write_bytes(pickle.dumps(data.TensorData))
    with pytest.raises(pickle.UnpicklingError, match="nonrobust_ext.data.tensor_data.TensorData"):
        data.safe_load(tmp_path / "cls")


def test_cifar_missing_and_malformed(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"cifar10 not found: no batches\.meta"):
        data.cifar(tmp_path)
    fake_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(FileNotFoundError, match="data_batch_4"):
        data.cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").write_bytes(pickle.dumps({b"labels": [1]}))
    with pytest.raises(ValueError, match=r"data_batch_4: missing key 'data'"):
        data.cifar(tmp_path)
    with pytest.raises(ValueError, match="name must be 'cifar10' or 'cifar100'"):
        data.cifar(tmp_path, name="cifar20")


# ---------------------------------------------------------------------------------------------
# image folders


def write_png_folder(root: Path, sizes: dict[str, list[tuple[int, int]]]) -> dict[str, list[torch.Tensor]]:
    Image = pytest.importorskip("PIL.Image")
    g = torch.Generator().manual_seed(0)
    written: dict[str, list[torch.Tensor]] = {}
    for cls, hws in sizes.items():
        (root / cls).mkdir(parents=True)
        written[cls] = []
        for i, (h, w) in enumerate(hws):
            img = torch.randint(0, 256, (h, w, 3), generator=g, dtype=torch.uint8)
            Image.frombytes("RGB", (w, h), bytes(img.flatten().tolist())).save(root / cls / f"img{i}.png")
            written[cls].append(img.permute(2, 0, 1))
    return written


def test_image_folder_reads_pngs(tmp_path):
    written = write_png_folder(tmp_path, {"zebra": [(4, 5)] * 2, "ant": [(4, 5)] * 3})
    (tmp_path / "ant" / "notes.txt").write_text("not an image")
    d = data.image_folder(tmp_path)
    assert d.classes == ["ant", "zebra"] and d.y.tolist() == [0, 0, 0, 1, 1]
    assert d.x.shape == (5, 3, 4, 5) and d.x.dtype == torch.float32
    assert torch.equal(d.x[0], written["ant"][0].float() / 255)
    assert torch.equal(d.x[4], written["zebra"][1].float() / 255)
    grey = data.image_folder(tmp_path, channels=1, size=(6, 3))
    assert grey.x.shape == (5, 1, 6, 3) and 0 <= float(grey.x.min()) and float(grey.x.max()) <= 1


def test_image_folder_size_mismatch_names_the_file(tmp_path):
    write_png_folder(tmp_path, {"a": [(4, 5)], "b": [(4, 5), (6, 5)]})
    with pytest.raises(ValueError, match=r"img1\.png is 6x5 \(HxW\) but .*img0\.png is 4x5; pass size="):
        data.image_folder(tmp_path)
    assert data.image_folder(tmp_path, size=8).x.shape == (3, 3, 8, 8)


def test_load_folder_with_train_test_subfolders(tmp_path):
    write_png_folder(tmp_path / "train", {"a": [(4, 4)] * 3, "b": [(4, 4)]})
    write_png_folder(tmp_path / "test", {"a": [(4, 4)], "b": [(4, 4)]})
    assert len(data.load("folder", root=tmp_path)) == 4
    assert len(data.load("folder", root=tmp_path, train=False)) == 2
    with pytest.raises(ValueError, match="no train/ and test/"):
        data.load("folder", root=tmp_path / "test", train=False)


def test_image_folder_without_pillow(tmp_path, monkeypatch):
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "x.png").write_bytes(b"\x89PNG not really")
    monkeypatch.setitem(sys.modules, "PIL", None)  # makes `from PIL import Image` raise ImportError
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ImportError, match="pip install pillow"):
        data.image_folder(tmp_path)


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="root is not a folder"):
        data.image_folder(tmp_path / "nope")
    with pytest.raises(ValueError, match="no class subfolders"):
        data.image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(ValueError, match="empty_class has no images"):
        data.image_folder(tmp_path)
    with pytest.raises(ValueError, match="channels must be 1"):
        data.image_folder(tmp_path, channels=4)


# ---------------------------------------------------------------------------------------------
# synthetic task and load()


def test_synthetic_is_reproducible_and_balanced():
    a = data.synthetic(100, seed=1)
    assert a.x.shape == (100, 1, 28, 28) and a.num_classes == 10
    assert float(a.x.min()) >= 0 and float(a.x.max()) <= 1
    assert torch.equal(a.y.bincount(), torch.full((10,), 10))
    b = data.synthetic(100, seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    assert not torch.equal(a.x, data.synthetic(100, seed=2).x)
    c = data.synthetic(12, num_classes=3, shape=(3, 5, 7), noise=0.0)
    assert c.x.shape == (12, 3, 5, 7)
    # Noise-free samples of one class are identical: the class pattern.
    assert torch.equal(c.x[c.y == 0][0], c.x[c.y == 0][-1])
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        data.synthetic(10, num_classes=1)
    with pytest.raises(ValueError, match="noise must be"):
        data.synthetic(10, noise=-0.1)


def _linear_accuracy(train: data.TensorData, test: data.TensorData) -> float:
    torch.manual_seed(0)
    model = torch.nn.Linear(train.x[0].numel(), train.num_classes)
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(model(train.x.flatten(1)), train.y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return float((model(test.x.flatten(1)).argmax(1) == test.y).float().mean())


def test_synthetic_is_learnable_across_seeds():
    train, test = data.synthetic(400, seed=1), data.synthetic(500, seed=2)
    acc = _linear_accuracy(train, test)
    assert acc > 0.8, f"logistic regression on seed-1 data reaches only {acc:.2f} on seed-2 data (chance 0.1)"
    # A different task (other patterns) is not what the model learnt: it must not transfer.
    other = data.synthetic(500, seed=2, pattern_seed=1)
    assert _linear_accuracy(train, other) < 0.4


def test_load_dispatch(tmp_path):
    tr = data.load("synthetic", n=30, num_classes=3)
    te = data.load("synthetic", train=False, n=30, num_classes=3)
    assert len(tr) == 30 and tr.num_classes == 3 and not torch.equal(tr.x, te.x)
    assert len(data.load("synthetic")) == 6000 and len(data.load("synthetic", train=False)) == 1000
    fake_fmnist(tmp_path / "fm")
    assert len(data.load("fashion_mnist", root=tmp_path / "fm")) == 20
    with pytest.raises(ValueError, match="name must be one of fashion_mnist, cifar10, cifar100, folder, synthetic"):
        data.load("imagenet")
    with pytest.raises(TypeError, match="takes no extra keyword"):
        data.load("fashion_mnist", root=tmp_path / "fm", size=3)
    with pytest.raises(ValueError, match="needs root"):
        data.load("folder")
