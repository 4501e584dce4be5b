"""Token streams for the LM trainable and the random windows it trains on.

Two sources:
- ``shakespeare``: the embedded byte-level corpus (``trainables/data/shakespeare.txt.xz``,
  see its NOTICE.md); vocabulary 256; checked against its SHA-256 so that every
  machine trains on the same bytes. Split into train/val by 64 KiB blocks (every
  10th block is validation), so both splits have the same distribution.
- ``bin``: nanoGPT's ``train.bin`` / ``val.bin`` (uint16 GPT-2 tokens) read with
  ``np.memmap``; vocabulary 50304 (GPT-2's 50257 padded).

Batches are random windows sampled with replacement from a ``torch.Generator`` seeded
per run, so the same seed gives the same batches whatever else (WD, LR, schedule,
precision) differs: arms of a study see the same data in the same order.
"""

from __future__ import annotations

import functools
import hashlib
import lzma
import os
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch

CORPUS_FILE = "shakespeare.txt.xz"
CORPUS_SHA256 = "3237e33221e73615c677bd59fd69a76da38f9a2eb51d6efb7191f32f8cb9fa4c"
BLOCK = 64 * 1024
VAL_EVERY = 10
GPT2_VOCAB = 50304


@functools.lru_cache(maxsize=1)
def embedded_corpus() -> bytes:
    """The embedded corpus as bytes, verified against its published hash."""
    raw = lzma.decompress(resources.files("trainables").joinpath("data", CORPUS_FILE).read_bytes())
    digest = hashlib.sha256(raw).hexdigest()
    if digest != CORPUS_SHA256:
        raise RuntimeError(f"embedded corpus {CORPUS_FILE} is corrupt: sha256 {digest} != {CORPUS_SHA256}")
    return raw


def split_blocks(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every ``VAL_EVERY``-th block of ``BLOCK`` tokens goes to validation."""
    n_blocks = -(-len(tokens) // BLOCK)
    is_val = np.zeros(len(tokens), dtype=bool)
    for b in range(VAL_EVERY - 1, n_blocks, VAL_EVERY):
        is_val[b * BLOCK:(b + 1) * BLOCK] = True
    return tokens[~is_val], tokens[is_val]


@dataclass
class TokenData:
    train: np.ndarray  # 1-D integer tokens (may be a memmap)
    val: np.ndarray
    vocab_size: int


def load_tokens(dataset: str, data_dir: str = "") -> TokenData:
    """The train and validation token streams of ``dataset`` (see the module docstring)."""
    if dataset == "shakespeare":
        tokens = np.frombuffer(embedded_corpus(), dtype=np.uint8)
        train, val = split_blocks(tokens)
        return TokenData(train, val, vocab_size=256)
    if dataset == "bin":
        if not data_dir:
            raise ValueError("dataset 'bin' needs data_dir: a folder with train.bin and val.bin")
        splits = []
        for split in ("train", "val"):
            path = os.path.join(os.path.expanduser(data_dir), f"{split}.bin")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} not found (nanoGPT format: uint16 GPT-2 tokens, "
                                        f"as written by nanoGPT's data/openwebtext/prepare.py)")
            size = os.path.getsize(path)
            if size == 0 or size % 2:
                raise ValueError(f"{path}: {size} bytes is not a non-empty array of uint16 tokens")
            splits.append(np.memmap(path, dtype=np.uint16, mode="r"))
        return TokenData(*splits, vocab_size=GPT2_VOCAB)
    raise ValueError(f"unknown dataset {dataset!r}; choose shakespeare or bin")


class WindowSampler:
    """Random (x, y) windows of ``context`` tokens, y shifted by one, from one split.

    Window starts are drawn uniformly with replacement (as nanoGPT's ``get_batch``)
    from a generator seeded with ``seed``, so a seed fixes the batch order. Splits
    of up to ``RESIDENT_LIMIT`` tokens (the embedded corpus) live on the device as
    one tensor, and starts and windows are drawn there: no host work per batch.
    Larger splits stay memory-mapped; windows are gathered on the host in one
    vectorised read and copied to the device from pinned memory without blocking.
    The batch order for a seed is the same on every machine of one device type
    (CPU and CUDA generators give different streams).
    """

    RESIDENT_LIMIT = 64 * 2**20  # tokens

    def __init__(self, tokens: np.ndarray, *, context: int, batch_size: int, seed: int,
                 device: torch.device, vocab_size: int | None = None):
        if len(tokens) <= context + 1:
            raise ValueError(f"a split of {len(tokens)} tokens is too short for context {context}")
        self.tokens = tokens
        self.context, self.batch_size, self.device = context, batch_size, device
        self.n_starts = len(tokens) - context  # a window needs context + 1 tokens
        self.resident = len(tokens) <= self.RESIDENT_LIMIT
        if self.resident:
            host = np.asarray(tokens).astype(np.int32)
            if vocab_size is not None and host.max(initial=0) >= vocab_size:
                raise ValueError(f"token {int(host.max())} is outside the vocabulary of {vocab_size}")
            self.data = torch.from_numpy(host).to(device)
            self.generator = torch.Generator(device=device).manual_seed(seed)
        else:
            self.generator = torch.Generator().manual_seed(seed)
        self.offsets = torch.arange(context + 1, device=device if self.resident else "cpu")

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The next (x, y) pair, int64 tensors of shape (batch_size, context) on the device."""
        starts = torch.randint(self.n_starts, (self.batch_size,), generator=self.generator,
                               device=self.generator.device)
        index = starts[:, None] + self.offsets  # (B, T+1)
        if self.resident:
            windows = self.data[index].long()
        else:
            windows = torch.from_numpy(self.tokens[index.numpy()].astype(np.int64))
            if self.device.type == "cuda":
                windows = windows.pin_memory().to(self.device, non_blocking=True)
            else:
                windows = windows.to(self.device)
        return windows[:, :-1], windows[:, 1:]

    def fixed_batches(self, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``n`` batches drawn now, to be evaluated again and again."""
        return [self.batch() for _ in range(n)]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
