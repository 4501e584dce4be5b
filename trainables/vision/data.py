"""Image classification data for the vision trainable, held on the device and batched there.

Sources:
- ``mnist1d``: the embedded default. The PyPI package ``mnist1d`` (pinned in
  pyproject.toml) generates a procedural 1-D analogue of MNIST from a seed: ten 1-D
  digit templates, randomly padded, scaled, translated, sheared and noised into
  length-40 signals. Nothing is downloaded (``make_dataset`` only; the package's URL
  download is never used). We generate ``train + test`` examples (default 4000 + 4000)
  with the package's default arguments and split them in order; inputs are
  standardised with the training mean/std. A generated set is kept on disk
  (``mnist1d_cache_folder``: ``~/.cache/wd-study`` unless ``WD_STUDY_CACHE`` says otherwise),
  so that a fresh Ray worker loads it instead of generating it again.
- ``cifar10`` / ``cifar100``: the python-pickle batches of
  https://www.cs.toronto.edu/~kriz/cifar.html (``cifar-10-batches-py/data_batch_1..5``,
  ``test_batch``; ``cifar-100-python/train``, ``test``) from a local folder, normalised
  with the CIFAR-10 channel mean/std (the paper does so for both). ``download=True``
  fetches them with torchvision when it is installed and the internet is reachable.
  ``input_norm`` picks the normalisation (``INPUT_NORMS``): ``cifar``, the training set's
  channel mean and std; ``authors-vgg``, the paper's loader, which divides by the
  (0.2023, 0.1994, 0.2010) its code base inherited — the VGG model then applies ImageNet's
  Normalize on top (``trainables.models.vgg``), as the authors' VGG does.

``DeviceBatches`` is the airbench way: the whole split lives on the device, an epoch
is a ``randperm`` cut into slices, augmentation (random crop of a zero-padded image +
horizontal flip) is a few whole-batch tensor ops. No DataLoader, no worker processes.
"""

from __future__ import annotations

import fcntl
import functools
import os
import pickle
import random
import zipfile
from dataclasses import dataclass

import numpy as np
import torch

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2471, 0.2435, 0.2616)
AUTHORS_CIFAR_STD = (0.2023, 0.1994, 0.2010)  # the paper's loader (shared/paper.md)
INPUT_NORMS = {"cifar": (CIFAR_MEAN, CIFAR_STD), "authors-vgg": (CIFAR_MEAN, AUTHORS_CIFAR_STD)}
CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_FILES = {
    "cifar10": ([f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], b"labels", 10),
    "cifar100": (["train"], ["test"], b"fine_labels", 100),
}
MNIST1D_DEFAULT_SPLIT = 4000
CROP_PADDING = 4


@dataclass
class VisionData:
    """Both splits as float32 inputs (N, C, *spatial) and int64 labels, on the CPU."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    name: str

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def load_dataset(name: str, *, data_dir: str = "", train_samples: int = 0, test_samples: int = 0,
                 data_seed: int = 42, download: bool = False, input_norm: str = "cifar") -> VisionData:
    """Load one dataset; ``train_samples``/``test_samples`` > 0 keep the first that many;
    ``input_norm`` (a key of ``INPUT_NORMS``) normalises CIFAR images (mnist1d: its own)."""
    if name == "mnist1d":
        n_train = train_samples or MNIST1D_DEFAULT_SPLIT
        n_test = test_samples or MNIST1D_DEFAULT_SPLIT
        x_train, y_train, x_test, y_test = _mnist1d(n_train, n_test, data_seed)
        mean, std = x_train.mean(), x_train.std()
        return VisionData(((x_train - mean) / std)[:, None, :], y_train,
                          ((x_test - mean) / std)[:, None, :], y_test, 10, name)
    if name in CIFAR_FILES:
        folder = cifar_folder(name, data_dir, download)
        train_files, test_files, label_key, classes = CIFAR_FILES[name]
        x_train, y_train = _read_cifar_files(folder, train_files, label_key)
        x_test, y_test = _read_cifar_files(folder, test_files, label_key)
        if train_samples:
            x_train, y_train = x_train[:train_samples], y_train[:train_samples]
        if test_samples:
            x_test, y_test = x_test[:test_samples], y_test[:test_samples]
        mean, std = INPUT_NORMS[input_norm]
        return VisionData(_normalise_images(x_train, mean, std), y_train, _normalise_images(x_test, mean, std),
                          y_test, classes, name)
    raise ValueError(f"unknown dataset {name!r}; choose mnist1d, cifar10 or cifar100")


@functools.lru_cache(maxsize=4)  # trials reused by Ray in one process generate it once
def _mnist1d(n_train: int, n_test: int, seed: int) -> tuple[torch.Tensor, ...]:
    total = -(-(n_train + n_test) // 10) * 10  # the generator makes num_samples // 10 per class
    x, y = _mnist1d_cached(total, seed)
    return x[:n_train], y[:n_train], x[n_train:n_train + n_test], y[n_train:n_train + n_test]


def mnist1d_cache_folder() -> str | None:
    """Where generated mnist1d sets are kept between processes: ``$WD_STUDY_CACHE``, else
    ``$XDG_CACHE_HOME/wd-study`` or ``~/.cache/wd-study``; ``WD_STUDY_CACHE=`` (empty) turns it off."""
    if "WD_STUDY_CACHE" in os.environ:
        return os.environ["WD_STUDY_CACHE"] or None
    return os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "wd-study")


def _mnist1d_cached(total: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The generated set, from the disk cache when it is there: generating 35,000 signals takes
    about 30 s, which every fresh Ray worker paid before its first epoch. The file name holds
    the generator's version, the size and the seed; a missing or damaged file is generated again."""
    from importlib.metadata import version

    folder = mnist1d_cache_folder()
    path = os.path.join(folder, f"mnist1d-{version('mnist1d')}-n{total}-seed{seed}.npz") if folder else None
    if path:
        try:
            with np.load(path) as cached:
                x, y = cached["x"], cached["y"]
            if len(x) == len(y) == total:
                return torch.from_numpy(x), torch.from_numpy(y)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass
    x, y = _mnist1d_generate(total, seed)
    if path:
        tmp = f"{path}.{os.getpid()}.tmp"
        try:
            os.makedirs(folder, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, x=x.numpy(), y=y.numpy())
            os.replace(tmp, path)  # whole or not at all: concurrent workers write the same bytes
        except OSError:  # a read-only home: no cache, nothing else changes
            if os.path.exists(tmp):
                os.remove(tmp)
    return x, y


def _mnist1d_generate(total: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = total
    args.train_split = 1.0  # we split ourselves, so both splits have exactly the sizes asked for
    args.seed = seed
    # make_dataset seeds Python's and NumPy's global generators; leave them as they were
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        data = make_dataset(args)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
    x = torch.from_numpy(np.ascontiguousarray(data["x"], dtype=np.float32))
    y = torch.from_numpy(np.asarray(data["y"], dtype=np.int64))  # shuffled across classes by the generator
    return x, y


def cifar_folder(name: str, data_dir: str, download: bool = False) -> str:
    """The folder with the pickle batches: ``data_dir`` itself or its standard subfolder."""
    subfolder = CIFAR_FOLDERS[name]
    if not data_dir:
        raise ValueError(f"dataset {name} needs data_dir: a folder holding {subfolder}/ "
                         f"(the python version from https://www.cs.toronto.edu/~kriz/cifar.html)")
    if not os.path.isabs(data_dir):
        raise ValueError(f"data_dir {data_dir!r} must be an absolute path (Ray runs each trial in its own working folder)")
    for folder in (data_dir, os.path.join(data_dir, subfolder)):
        if all(os.path.isfile(os.path.join(folder, f)) for f in CIFAR_FILES[name][0] + CIFAR_FILES[name][1]):
            return folder
    if download:
        _download_cifar(name, data_dir)
        return os.path.join(data_dir, subfolder)
    raise FileNotFoundError(f"{data_dir}: no {name} pickle batches here or in {subfolder}/ "
                            f"(expected {', '.join(CIFAR_FILES[name][0] + CIFAR_FILES[name][1])}); "
                            f"set download: true to fetch them with torchvision")


def _download_cifar(name: str, data_dir: str) -> None:
    try:
        import torchvision
    except ImportError:
        raise RuntimeError(f"download: true needs torchvision (pip install torchvision), or put "
                           f"{CIFAR_FOLDERS[name]}/ into {data_dir} by hand") from None
    os.makedirs(data_dir, exist_ok=True)
    dataset = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100}[name]
    # concurrent trials on one machine: one downloads, the others wait for it
    with open(os.path.join(data_dir, f".{name}.download.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            dataset(root=data_dir, train=True, download=True)
        except Exception as exc:  # no internet, a proxy, a full disk: say what to do instead
            raise RuntimeError(f"downloading {name} into {data_dir} failed ({exc}); put "
                               f"{CIFAR_FOLDERS[name]}/ there by hand") from exc


def read_cifar_batch(path: str, label_key: bytes = b"labels") -> tuple[np.ndarray, np.ndarray]:
    """One pickle batch → uint8 images (N, 3, 32, 32) and int64 labels."""
    with open(path, "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    try:
        data, labels = batch[b"data"], batch[label_key]
    except (KeyError, TypeError):
        raise ValueError(f"{path}: not a CIFAR python batch (needs keys b'data' and {label_key!r})") from None
    images = np.asarray(data, dtype=np.uint8)
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32:
        raise ValueError(f"{path}: expected data of shape (N, 3072), got {images.shape}")
    return images.reshape(-1, 3, 32, 32), np.asarray(labels, dtype=np.int64)


def _read_cifar_files(folder: str, files: list[str], label_key: bytes) -> tuple[torch.Tensor, torch.Tensor]:
    parts = [read_cifar_batch(os.path.join(folder, f), label_key) for f in files]
    return (torch.from_numpy(np.concatenate([p[0] for p in parts])),
            torch.from_numpy(np.concatenate([p[1] for p in parts])))


def _normalise_images(images: torch.Tensor, mean: tuple, std: tuple) -> torch.Tensor:
    mean = torch.tensor(mean).view(1, 3, 1, 1)
    std = torch.tensor(std).view(1, 3, 1, 1)
    return (images.float() / 255.0 - mean) / std


def balanced_subset(labels: torch.Tensor, size: int, num_classes: int) -> torch.Tensor:
    """Indices of the first ``size // num_classes`` examples of every class (in dataset order)."""
    per_class = max(1, size // num_classes)
    picks = [torch.nonzero(labels == c).flatten()[:per_class] for c in range(num_classes)]
    return torch.sort(torch.cat(picks)).values


class DeviceBatches:
    """Minibatches of one split held on the device.

    ``epoch()`` yields ``(x, y)`` slices of a fresh random permutation (``shuffle``) or
    of the dataset order; ``drop_last`` drops the final partial batch. With
    ``augment`` each image is cropped at a random offset from its zero-padded copy
    and flipped left-right with probability ½ — whole-batch ops, drawn from
    ``generator`` so that a run's batches depend only on its seed.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, device: torch.device,
                 shuffle: bool = False, drop_last: bool = False, augment: bool = False,
                 generator: torch.Generator | None = None):
        if augment and x.dim() != 4:
            raise ValueError("augment (random crop + flip) is for images (N, C, H, W); mnist1d has no augmentation")
        if (shuffle or augment) and generator is None:
            raise ValueError("shuffle/augment need a torch.Generator")
        self.x, self.y = x.to(device), y.to(device)
        self.batch_size, self.shuffle, self.drop_last, self.augment = batch_size, shuffle, drop_last, augment
        self.generator, self.device = generator, device
        if augment:  # pad once; every crop is then a gather from this copy
            p = CROP_PADDING
            self.x_padded = torch.nn.functional.pad(self.x, (p, p, p, p))

    def __len__(self) -> int:
        n = len(self.y)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def epoch(self):
        n = len(self.y)
        order = (torch.randperm(n, device=self.device, generator=self.generator) if self.shuffle
                 else torch.arange(n, device=self.device))
        for i in range(len(self)):
            index = order[i * self.batch_size:(i + 1) * self.batch_size]
            x = self._augmented(index) if self.augment else self.x[index]
            yield x, self.y[index]

    def _augmented(self, index: torch.Tensor) -> torch.Tensor:
        b, (c, h, w) = len(index), self.x.shape[1:]
        shifts = torch.randint(0, 2 * CROP_PADDING + 1, (2, b), device=self.device, generator=self.generator)
        rows = (shifts[0, :, None] + torch.arange(h, device=self.device))[:, None, :, None]  # (B, 1, H, 1)
        cols = (shifts[1, :, None] + torch.arange(w, device=self.device))[:, None, None, :]  # (B, 1, 1, W)
        x = self.x_padded[index[:, None, None, None], torch.arange(c, device=self.device)[None, :, None, None], rows, cols]
        flip = torch.rand(b, device=self.device, generator=self.generator) < 0.5
        return torch.where(flip[:, None, None, None], x.flip(3), x)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()} if self.generator is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.generator is not None:
            self.generator.set_state(state["generator"])
