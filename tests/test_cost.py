"""The dry-run's cost estimate (study/cost.py) against hand-computed FLOPs, token and sample
counts, GPU-hours and the packing of trials onto GPUs."""

import pytest
import torch.nn as nn

from study import load_spec, parse_spec
from study.cost import (GPU_PEAKS, CostError, concurrent_trials, estimate, format_estimate, forward_flops,
                        gpt_flops_per_token, lm_trial_cost, packed_wall_seconds, vision_forward_flops,
                        vision_trial_cost)

# gpt2-124m (12 layers, 12 heads, width 768, no biases, tied head) over the 50304-token vocabulary
GPT2_WTE = 50304 * 768  # token embedding = the output head: counted (it is the head's matmul)
GPT2_LAYER = 768 * 3 * 768 + 768 * 768 + 768 * 4 * 768 + 4 * 768 * 768 + 2 * 768  # qkv, proj, MLP, 2 LN gains
GPT2_N = GPT2_WTE + 12 * GPT2_LAYER + 768  # + final LN gain; the position embedding is left out
GPT2_FLOPS_PER_TOKEN_256 = 6 * GPT2_N + 12 * 12 * 12 * 64 * 256  # 6N + 12·L·H·Q·T at T = 256


def test_gpt2_124m_flops_per_token_at_context_256_by_hand():
    assert GPT2_N == 123_587_328 and GPT2_FLOPS_PER_TOKEN_256 == 769_835_520
    assert gpt_flops_per_token("gpt2-124m", 256, 50304)[0] == GPT2_FLOPS_PER_TOKEN_256
    # the attention term grows with the context: T = 1024 adds 12·12·12·64·768 more
    assert gpt_flops_per_token("gpt2-124m", 1024, 50304)[0] == GPT2_FLOPS_PER_TOKEN_256 + 12 * 12 * 12 * 64 * 768


def test_chinchilla_trial_tokens_flops_and_gpu_hours_by_hand():
    spec = load_spec("chinchilla")
    trial = lm_trial_cost(spec.trial_configs()[0], spec.grid()[0])
    trained = (50_000 + 10_000) * 65_536  # steps + tail steps, 256 sequences × 256 tokens each
    per_pass = (60_000 // 200) * 16 * 64 * 256  # 300 reports × 16 batches × 64 sequences × 256 tokens
    assert trial.trained == trained == 3_932_160_000
    assert trial.evaluated == 3 * per_pass  # validation, training split, EMA model
    flops = GPT2_FLOPS_PER_TOKEN_256 * trained + 3 * (GPT2_FLOPS_PER_TOKEN_256 / 3) * per_pass
    assert trial.flops == pytest.approx(flops, rel=1e-12)
    # bf16 autocast at 40 % of the H100's dense bf16 peak of 989 TFLOP/s
    assert trial.gpu_seconds(GPU_PEAKS["H100"], 0.4) / 3600 == pytest.approx(flops / (989e12 * 0.4) / 3600)
    est = estimate(spec, gpu="H100", mfu=0.4, gpus=8)
    assert est.gpu_hours == pytest.approx(8 * flops / (989e12 * 0.4) / 3600)
    assert est.wall_hours == pytest.approx(flops / (989e12 * 0.4) / 3600)  # 8 trials on 8 GPUs: one round
    assert estimate(spec, gpu="a100", mfu=0.5, gpus=8).gpu_hours == pytest.approx(8 * flops / (312e12 * 0.5) / 3600)


def test_the_precision_picks_the_peak_it_trains_at():
    spec = load_spec("bf16-divergence")  # fp32 with TF32 matmuls vs bf16 autocast
    est = estimate(spec, gpu="H100")
    by_precision = {t.point["precision"]: t for t in est.trials}
    fp32, bf16 = by_precision["fp32"], by_precision["bf16-autocast"]
    assert fp32.flops == bf16.flops
    assert {w.math for w in fp32.work} == {"tf32"} and {w.math for w in bf16.work} == {"bf16"}
    assert fp32.gpu_seconds(est.peaks, 0.4) == pytest.approx(fp32.flops / (494e12 * 0.4))
    no_tf32 = estimate(load_spec("bf16-divergence", ["tf32=false"]), gpu="H100")
    assert {w.math for t in no_tf32.trials if t.point["precision"] == "fp32" for w in t.work} == {"fp32"}
    lines = format_estimate(est)
    assert any("9 trials (precision=fp32)" in line for line in lines)
    assert any("9 trials (precision=bf16-autocast)" in line for line in lines)


def test_forward_flops_of_a_small_conv_linear_stack_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 10))
    conv = 2 * (4 * 8 * 8) * (3 * 3 * 3)  # 2 per multiply-add × outputs × (in channels × kernel)
    linear = 2 * (4 * 8 * 8) * 10
    assert forward_flops(net, (3, 8, 8)) == conv + linear == 18_944


def test_the_scale_invariant_cnn_per_sample_by_hand():
    # cnn1d-si at width 32 on a (1, 40) signal: 2 × output positions × out channels × (kernel × in channels)
    convs = (2 * 40 * 32 * 5 * 1) + (2 * 20 * 32 * 3 * 32) + (2 * 10 * 64 * 3 * 32) + (2 * 5 * 64 * 3 * 64)
    head = 2 * (64 * 5) * 10
    assert vision_forward_flops("cnn1d-si", 32, "mnist1d") == (convs + head, True)  # it has BatchNorm


def test_vision_trial_counts_every_pass_the_config_turns_on():
    config = dict(model="cnn1d-si", dataset="mnist1d", train_samples=1000, test_samples=500, batch_size=64,
                  epochs=4, eval_every=2, train_eval="full", ema_decay=0.999, hessian_every=2, hessian_probes=10,
                  hessian_samples=200, finetune_every=2, finetune_epochs=1, precision="fp32")
    trial = vision_trial_cost(config, {})
    f = 387_840  # forward FLOPs per sample (test above)
    epoch = (1000 // 64) * 64  # 15 full batches of 64: 960 samples per epoch
    reports = 2  # epochs 2 and 4
    per_report = 1000 + 500  # a full pass over the training split, then the test split
    hessian = 200 * (1 * 3 + 10 * 4)  # 200 samples: one chunk of 10 probes (graph 3F, each probe 4F)
    expected = f * (3 * 4 * epoch  # training
                    + reports * per_report  # evaluation
                    + reports * per_report  # EMA: BatchNorm statistics over the training split, then test
                    + 2 * hessian  # Tr(H) at epochs 2 and 4
                    + 2 * (3 * epoch + per_report)  # fine-tuning branches from epochs 2 and 4
                    + 2 * hessian)  # and their Tr(H)
    assert trial.flops == expected
    assert trial.trained == 4 * epoch
    assert {w.what: w.math for w in trial.work} == {"train": "tf32", "eval": "tf32", "ema eval": "tf32",
                                                    "hessian": "tf32", "finetune": "tf32", "finetune hessian": "tf32"}
    # turned off, they cost nothing: running train loss, no EMA, no Hessian, no branches
    bare = vision_trial_cost({**config, "train_eval": "running", "ema_decay": 0.0, "hessian_every": 0,
                              "hessian_probes": 0, "finetune_every": 0}, {})
    assert bare.flops == f * (3 * 4 * epoch + reports * 500)
    assert [w.what for w in bare.work] == ["train", "eval"]


def test_gpu_peaks_agree_with_the_trainables_mfu_table():
    from trainables.lm.metrics import peak_bf16_flops

    for gpu, peaks in GPU_PEAKS.items():
        assert peaks["bf16"] == peak_bf16_flops(f"NVIDIA {gpu}")
        assert peaks["bf16"] > peaks["tf32"] > peaks["fp32"] or gpu == "L40S"


def test_trials_pack_onto_the_gpus_in_order():
    assert packed_wall_seconds([3, 3, 3], 2) == 6
    assert packed_wall_seconds([4, 1, 1, 1, 1], 2) == 4  # the long trial first: the others fill the other slot
    assert packed_wall_seconds([1, 1, 1, 1, 4], 2) == 6  # last: it starts when the first slot frees at 2
    assert packed_wall_seconds([5], 16) == 5
    assert concurrent_trials(0.5, 8) == 16 and concurrent_trials(1, 8) == 8 and concurrent_trials(2, 8) == 4
    assert concurrent_trials(0.3, 1) == 3 and concurrent_trials(1, 8, max_concurrent=3) == 3
    assert concurrent_trials(3, 2) == 0
    with pytest.raises(CostError, match="resources.gpu is 0"):
        concurrent_trials(0, 8)


def test_wall_time_with_the_study_resources():
    spec = load_spec("ushape")  # 27 trials, half a GPU each: two share a GPU at half speed
    one = spec.trial_configs()[0]
    t = vision_trial_cost(one, {}).gpu_seconds(GPU_PEAKS["H100"], 0.4) / 3600  # on a whole GPU
    est8 = estimate(spec, gpus=8)
    assert est8.slots == 16 and est8.gpu_hours == pytest.approx(27 * t)
    assert est8.wall_hours == pytest.approx(2 * 2 * t)  # 16 then 11 trials, each taking 2t on its half
    # one GPU: 14 rounds of two halves (the 27th trial keeps its half share alone)
    assert estimate(spec, gpus=1).wall_hours == pytest.approx(14 * 2 * t)
    capped = estimate(load_spec("ushape", ["max_concurrent=4"]), gpus=8)
    assert capped.slots == 4 and capped.wall_hours == pytest.approx(7 * 2 * t)  # ceil(27 / 4) rounds
    assert any("max_concurrent" in line for line in format_estimate(capped))
    too_big = estimate(load_spec("ushape", ["resources.gpu=4"]), gpus=2)
    assert too_big.wall_seconds is None and "needs 4 GPUs, the cluster has 2" in too_big.wall_note
    cpu = estimate(load_spec("quickstart"))
    assert cpu.wall_seconds is None and any("resources.gpu is 0" in line for line in format_estimate(cpu))


def test_a_packed_study_runs_its_members_in_one_ray_trial():
    spec = load_spec("quickstart", ["pack=4", "resources.gpu=1"])
    est = estimate(spec, gpus=4)
    assert est.ray_trials == ((0, 1, 2, 3),)
    assert est.wall_hours == pytest.approx(est.gpu_hours)  # one trial trains all four: no parallelism
    assert estimate(load_spec("quickstart", ["resources.gpu=1"]), gpus=4).wall_hours == pytest.approx(est.gpu_hours / 4)


def test_a_search_is_costed_at_its_most_expensive_end():
    spec = parse_spec({"name": "s", "trainable": "lm", "config": {"steps": 10, "eval_every": 5},
                       "axes": {"model": {"choice": ["gpt-nano", "gpt-tiny"]}, "weight_decay": [0.0, 0.1]},
                       "search": "random", "num_samples": 3})
    est = estimate(spec)
    assert len(est.trials) == 6
    tiny = gpt_flops_per_token("gpt-tiny", 64, 256)[0]
    assert all(t.train_flops_per_item == tiny for t in est.trials)
    assert any("upper bound" in note for note in est.notes)


def test_bad_options_and_trainables_without_a_flop_model():
    spec = load_spec("quickstart")
    with pytest.raises(CostError, match="unknown GPU 'V100'; choose one of A100, H100, H200, L40S"):
        estimate(spec, gpu="V100")
    for mfu in (0, 1.5, -0.1, True):
        with pytest.raises(CostError, match="MFU"):
            estimate(spec, mfu=mfu)
    with pytest.raises(CostError, match="cluster GPUs 0"):
        estimate(spec, gpus=0)
    probe = estimate(parse_spec({"name": "p", "trainable": "probe", "axes": {"seed": [0]}}))
    assert not probe.supported
    assert format_estimate(probe) == ["cost: not estimated (no FLOP model for trainable probe)"]


def test_dry_run_prints_the_estimate_and_refuses_bad_options_before_anything(capsys):
    from study.cli import main
    from study.cost import estimate, format_estimate
    from study.spec import load_spec

    assert main(["launch", "chinchilla", "--dry-run", "--gpu", "a100", "--gpus", "4", "--mfu", "0.5"]) == 0
    out = capsys.readouterr().out
    expected = format_estimate(estimate(load_spec("chinchilla"), gpu="A100", gpus=4, mfu=0.5))
    assert "\n".join(expected) in out and expected[0].startswith("cost estimate on A100")
    assert out.splitlines()[-1] == "8 trials"
    assert main(["launch", "chinchilla", "--dry-run", "--gpu", "V100"]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("error: ") and captured.err.count("\n") == 1
    assert main(["launch", "quickstart", "--gpus", "2"]) == 2  # estimate options without --dry-run
    assert "add --dry-run" in capsys.readouterr().err


def test_a_grid_beyond_the_costed_limit_is_not_enumerated(monkeypatch):
    from study import cost
    from study.spec import load_spec

    spec = load_spec("ushape-tiny", [f"axes.seed={list(range(5000))}"])
    assert spec.num_trials > cost.MAX_COSTED_TRIALS
    monkeypatch.setattr(type(spec), "grid", lambda self: (_ for _ in ()).throw(AssertionError("enumerated")))
    est = cost.estimate(spec)
    assert est.trials == () and "not estimated" in " ".join(cost.format_estimate(est))
