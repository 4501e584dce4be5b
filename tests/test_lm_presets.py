"""The LM presets: every trial config builds, and the full-scale ones carry the paper's settings."""

import pytest

from study import load_spec
from trainables.lm.config import LMConfig
from trainables.registry import build_config

LM_PRESETS = ["quickstart", "chinchilla-tiny", "bf16-tiny", "chinchilla", "bf16-divergence", "ln-wd-ablation"]
OWT = ["data_dir=/data/openwebtext"]  # the full-scale presets need a folder with train.bin/val.bin


@pytest.mark.parametrize("name", LM_PRESETS)
def test_every_trial_config_builds(name):
    spec = load_spec(name, OWT if name in ("chinchilla", "bf16-divergence", "ln-wd-ablation") else [])
    assert spec.trainable == "lm"
    for config in spec.trial_configs():
        build_config(LMConfig, config)  # the relations between fields hold too


def configs(name):
    return [build_config(LMConfig, c) for c in load_spec(name, OWT).trial_configs()]


def test_chinchilla_is_the_papers_run():
    trials = configs("chinchilla")
    assert {(c.schedule, c.weight_decay) for c in trials} >= {
        ("cosine", 0.0), ("cosine", 0.1), ("cosine", 0.3),
        ("constant", 0.0), ("constant", 0.1), ("constant", 0.3), ("constant", 0.6)}
    for c in trials:
        assert (c.model, c.context, c.tokens_per_step, c.steps) == ("gpt2-124m", 256, 256 * 256, 50_000)
        assert (c.optimizer, c.lr, c.lr * c.min_lr_ratio, c.warmup_steps) == ("adamw", 6e-4, pytest.approx(6e-5), 400)
        assert (c.beta1, c.beta2, c.grad_clip, c.precision) == (0.9, 0.95, 1.0, "bf16-autocast")
        assert (c.decay_embeddings, c.decay_norms, c.ema_decay, c.eval_every) == (True, False, 0.99, 200)
        assert (c.tail_steps, c.tail_lr) == (10_000, 1e-5)


def test_bf16_divergence_is_the_papers_run():
    trials = configs("bf16-divergence")
    assert len(trials) == 18
    assert {c.precision for c in trials} == {"fp32", "bf16-autocast"}
    assert {c.weight_decay for c in trials} == {0.0, 0.1, 0.3} and {c.seed for c in trials} == {0, 1, 2}
    for c in trials:
        assert (c.context, c.tokens_per_step, c.lr, c.schedule, c.steps) == (1024, 256 * 1024, 1e-3, "cosine", 50_000)


def test_ln_ablation_is_the_papers_grid():
    trials = configs("ln-wd-ablation")
    decay_norms = sorted(c.weight_decay for c in trials if c.decay_norms)
    assert decay_norms == [0.003, 0.01, 0.03, 0.1, 0.15, 0.2, 0.3]
    assert all(c.schedule == "cosine" and c.lr == 6e-4 and c.context == 256 for c in trials)


@pytest.mark.parametrize("overrides, axis, values", [
    (["schedule=cosine", "optimizer=adam", "weight_decay=0", "tail_steps=0",
      "axes.l2_penalty=[1.0e-6,3.0e-6,5.0e-6,7.0e-6,1.0e-5,1.0e-4,1.0e-3]"],
     "l2_penalty", [1e-6, 3e-6, 5e-6, 7e-6, 1e-5, 1e-4, 1e-3]),
    (["schedule=cosine", "optimizer=sgd", "lr=0.3", "tail_steps=0", "axes.weight_decay=[0.0,1.0e-5,3.0e-5,1.0e-4]"],
     "weight_decay", [0.0, 1e-5, 3e-5, 1e-4]),
])
def test_readme_ablation_commands_build(overrides, axis, values):
    """The Adam+L2 and SGD ablations the README launches as `--set` variants of chinchilla."""
    trials = [build_config(LMConfig, c) for c in load_spec("chinchilla", OWT + overrides).trial_configs()]
    assert [getattr(c, axis) for c in trials] == values
    assert all(c.schedule == "cosine" and c.tail_steps == 0 for c in trials)
