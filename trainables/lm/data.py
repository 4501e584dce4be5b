"""Token streams for the LM trainable and the random windows it trains on.

Two sources:
- ``shakespeare``: the embedded byte-level corpus (``trainables/data/shakespeare.txt.xz``,
  see its NOTICE.md); vocabulary 256; checked against its SHA-256 so that every
  machine trains on the same bytes. Split into train/val by 64 KiB blocks (every
  10th block is validation), so both splits have the same distribution.
- ``bin``: nanoGPT's ``train.bin`` / ``val.bin`` (uint16 GPT-2 tokens) read with
  ``np.memmap``; vocabulary 50304 (GPT-2's 50257 padded).

Batches are random windows sampled with replacement from a ``torch.Generator`` seeded
per run, so the same seed gives the same batches whatever else differs.
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
    if dataset == "shakespeare":
        tokens = np.frombuffer(embedded_corpus(), dtype=np.uint8)
        train, val = split_blocks(tokens)
        return TokenData(train, val, vocab_size=256)
    if dataset == "bin":
        if not data_dir:
            raise ValueError("dataset 'bin' needs data_dir: a folder with train.bin and val.bin")
        paths = [os.path.join(data_dir, f"{split}.bin") for split in ("train", "val")]
        for path in paths:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path} not found (nanoGPT format: uint16 GPT-2 tokens)")
        train, val = (np.memmap(p, dtype=np.uint16, mode="r") for p in paths)
        return TokenData(train, val, vocab_size=GPT2_VOCAB)
    raise ValueError(f"unknown dataset {dataset!r}")


class WindowSampler:
    """Random (x, y) windows of ``context`` tokens, y shifted by one, from one split.

    Small splits (the embedded corpus) are held on the device as one tensor and
    windows are gathered there; large memmaps are sliced on the host and copied.
    """

    RESIDENT_LIMIT = 64 * 2**20  # tokens; larger splits stay memory-mapped

    def __init__(self, tokens: np.ndarray, *, context: int, batch_size: int, seed: int,
                 device: torch.device):
        if len(tokens) <= context + 1:
            raise ValueError(f"a split of {len(tokens)} tokens is too short for context {context}")
        self.tokens = tokens
        self.context, self.batch_size, self.device = context, batch_size, device
        self.generator = torch.Generator().manual_seed(seed)
        self.resident = None
        if len(tokens) <= self.RESIDENT_LIMIT:
            self.resident = torch.from_numpy(np.asarray(tokens, dtype=np.int64)).to(device)
            self.offsets = torch.arange(context + 1, device=device)

    def starts(self) -> torch.Tensor:
        return torch.randint(len(self.tokens) - self.context - 1, (self.batch_size,), generator=self.generator)

    def batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        starts = self.starts()
        if self.resident is not None:
            windows = self.resident[starts.to(self.device)[:, None] + self.offsets]  # (B, T+1)
        else:
            windows = torch.from_numpy(np.stack([
                np.asarray(self.tokens[s:s + self.context + 1], dtype=np.int64) for s in starts.tolist()
            ])).to(self.device, non_blocking=True)
        return windows[:, :-1], windows[:, 1:]

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])
