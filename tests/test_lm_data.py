"""LM data: the embedded corpus, nanoGPT .bin files via memmap, deterministic windows, config checks."""

import numpy as np
import pytest
import torch

from trainables.lm.config import LMConfig
from trainables.lm.data import BLOCK, GPT2_VOCAB, WindowSampler, embedded_corpus, load_tokens
from trainables.registry import ConfigError, build_config

CPU = torch.device("cpu")


@pytest.fixture
def bin_dir(tmp_path):
    """nanoGPT-format splits whose token at index i is (offset + i): windows are easy to check."""
    np.arange(0, 5000, dtype=np.uint16).tofile(tmp_path / "train.bin")
    np.arange(40000, 42000, dtype=np.uint16).tofile(tmp_path / "val.bin")
    return tmp_path


@pytest.fixture(params=["memmap", "resident"])
def placement(request, monkeypatch):
    if request.param == "memmap":
        monkeypatch.setattr(WindowSampler, "RESIDENT_LIMIT", 0)
    return request.param


def test_bin_files_are_memory_mapped(bin_dir):
    data = load_tokens("bin", str(bin_dir))
    assert isinstance(data.train, np.memmap) and isinstance(data.val, np.memmap)
    assert data.train.dtype == np.uint16 and len(data.train) == 5000 and len(data.val) == 2000
    assert data.vocab_size == GPT2_VOCAB == 50304


def test_windows_are_shifted_slices_of_the_split(bin_dir, placement):
    data = load_tokens("bin", str(bin_dir))
    sampler = WindowSampler(data.val, context=32, batch_size=8, seed=3, device=CPU)
    assert sampler.resident == (placement == "resident")
    for _ in range(5):
        x, y = sampler.batch()
        assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == torch.int64
        starts = x[:, 0]
        assert (x == starts[:, None] + torch.arange(32)).all()  # consecutive tokens of val.bin
        assert (y == x + 1).all()  # targets are the next token
        assert ((starts >= 40000) & (starts + 32 < 42000)).all()


def test_same_seed_same_batches_and_resume(bin_dir, placement):
    data = load_tokens("bin", str(bin_dir))
    make = lambda seed: WindowSampler(data.train, context=16, batch_size=4, seed=seed, device=CPU)  # noqa: E731
    a, b, other = make(7), make(7), make(8)
    batches_a = [a.batch()[0] for _ in range(4)]
    assert all(torch.equal(x, b.batch()[0]) for x in batches_a)
    assert not all(torch.equal(x, other.batch()[0]) for x in batches_a)
    # the generator state continues the sequence exactly
    c = make(7)
    c.batch()
    saved = c.state_dict()
    d = make(0)
    d.load_state_dict(saved)
    assert all(torch.equal(c.batch()[0], d.batch()[0]) for _ in range(3))
    assert torch.equal(make(7).fixed_batches(2)[1][0], batches_a[1])


def test_bad_bin_folders(tmp_path):
    with pytest.raises(FileNotFoundError, match="train.bin not found"):
        load_tokens("bin", str(tmp_path))
    (tmp_path / "train.bin").write_bytes(b"\x00" * 3)
    (tmp_path / "val.bin").write_bytes(b"\x00" * 4)
    with pytest.raises(ValueError, match="3 bytes is not a non-empty array of uint16"):
        load_tokens("bin", str(tmp_path))


def test_split_shorter_than_context_and_tokens_outside_vocab():
    with pytest.raises(ValueError, match="too short for context 16"):
        WindowSampler(np.arange(10), context=16, batch_size=2, seed=0, device=CPU)
    with pytest.raises(ValueError, match="outside the vocabulary"):
        WindowSampler(np.arange(100), context=16, batch_size=2, seed=0, device=CPU, vocab_size=50)


def test_embedded_corpus_and_its_split():
    raw = embedded_corpus()
    assert len(raw) == 5_057_282 and raw[:200].isascii()
    data = load_tokens("shakespeare")
    assert data.vocab_size == 256
    assert len(data.train) + len(data.val) == len(raw)
    n_blocks = -(-len(raw) // BLOCK)
    n_val_blocks = len(range(9, n_blocks, 10))
    assert len(data.val) == sum(min(BLOCK, len(raw) - b * BLOCK) for b in range(9, n_blocks, 10))
    assert n_val_blocks == 7 and len(data.train) == 4_598_530
    assert bytes(data.val[:BLOCK]) == raw[9 * BLOCK:10 * BLOCK]  # the 10th block is the first of val


def test_config_relations_are_checked():
    with pytest.raises(ConfigError, match="data_dir: dataset bin needs data_dir"):
        build_config(LMConfig, {"dataset": "bin"}).check_inputs()  # at launch: a preset leaves it to --set
    with pytest.raises(ConfigError, match="is relative"):
        build_config(LMConfig, {"dataset": "bin", "data_dir": "data/owt"})
    with pytest.raises(ConfigError, match="optimizer adam has no weight decay"):
        build_config(LMConfig, {"optimizer": "adam", "weight_decay": 0.1})
    with pytest.raises(ConfigError, match="not a multiple of batch_size \\* context = 1024"):
        build_config(LMConfig, {"batch_tokens": 1500})
    with pytest.raises(ConfigError, match="either batch_tokens or grad_accum"):
        build_config(LMConfig, {"batch_tokens": 2048, "grad_accum": 2})
    paper = build_config(LMConfig, {"context": 256, "batch_size": 64, "batch_tokens": 65536})
    assert paper.accumulation == 4 and paper.tokens_per_step == 65536
    assert build_config(LMConfig, {"grad_accum": 3}).tokens_per_step == 3 * 16 * 64
