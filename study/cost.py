"""What a study will cost before it runs: FLOPs per trial from the model, the tokens or samples
it sees, GPU-hours at a stated MFU on a named GPU, and the wall time on a cluster of N GPUs.

    from study import load_spec
    from study.cost import estimate, format_estimate
    print("\\n".join(format_estimate(estimate(load_spec("chinchilla"), gpu="H100", gpus=8))))

FLOPs count a multiply-add as 2 and only matrix products and convolutions (as PaLM's MFU and
torch's ``FlopCounterMode`` do); what that leaves out is listed in ``CostEstimate.notes``.

- LM: 6·N + 12·L·H·Q·T training FLOPs per token (PaLM, arXiv 2204.02311, appendix B; nanoGPT's
  ``estimate_mfu``), from ``GPT.flops_per_token``; an evaluation token costs a third of it
  (forward only). Tokens: (steps + tail_steps) × tokens per step, plus per report
  ``eval_batches × batch_size × context`` tokens for validation, the training-split estimate
  and the EMA model.
- Vision: forward FLOPs of one sample of the configured model, counted by
  ``torch.utils.flop_counter.FlopCounterMode``; a training sample costs 3× (backward ≈ 2×
  forward). Samples: epochs × (train size // batch) × batch, plus the evaluation passes,
  the EMA's BatchNorm re-estimation, Hutchinson Tr(H) estimates and fine-tuning branches the
  config turns on.

GPU time is FLOPs / (peak × MFU), with the peak of the arithmetic the config trains in
(``GPU_PEAKS``). The wall time packs the Ray trials onto the cluster in grid order, as many
at once as ``resources`` and ``max_concurrent`` allow. Searches count every sample run to
the end (a scheduler's early stops make it less: the estimate is an upper bound).
"""

from __future__ import annotations

import dataclasses
import functools
import heapq
import itertools
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from study.spec import StudySpec
from trainables.registry import build_config

# Peak FLOP/s per GPU without structured sparsity, from NVIDIA's datasheets (where a datasheet
# gives tensor-core numbers "with sparsity" only, the dense peak is half of it):
#   A100: "NVIDIA A100 Tensor Core GPU" datasheet, SXM: FP32 19.5 TF, TF32 156 TF, BF16/FP16 312 TF
#   H100: "NVIDIA H100 Tensor Core GPU" datasheet, SXM: FP32 67 TF, TF32 989* TF, BF16/FP16 1,979* TF
#   H200: "NVIDIA H200 Tensor Core GPU" datasheet, SXM: FP32 67 TF, TF32 989* TF, BF16/FP16 1,979* TF
#   L40S: "NVIDIA L40S GPU" datasheet: FP32 91.6 TF, TF32 183 TF (366*), BF16/FP16 362 TF (733*)
# (* with sparsity). fp16 runs at the bf16 rate on all of them. L40S: cluster.yaml's gpu_1x.
# The bf16 column agrees with trainables/lm/metrics.py's PEAK_BF16_FLOPS (tests/test_cost.py).
MATH = ("bf16", "tf32", "fp32")  # bf16 also stands for fp16 (same tensor-core rate)
GPU_PEAKS: dict[str, dict[str, float]] = {
    "A100": {"bf16": 312e12, "tf32": 156e12, "fp32": 19.5e12},
    "H100": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "H200": {"bf16": 989e12, "tf32": 494e12, "fp32": 67e12},
    "L40S": {"bf16": 362e12, "tf32": 183e12, "fp32": 91.6e12},
}
DEFAULT_GPU = "H100"
DEFAULT_MFU = 0.4
DEFAULT_GPUS = 8  # one 8-GPU node (the paper's GPT runs; cluster.yaml's gpu_8x)
MAX_COSTED_TRIALS = 10_000  # each trial's config is built and costed: beyond this, no estimate

# Dataset sizes and sample shapes of the vision trainable (trainables/vision/data.py): full
# split sizes; mnist1d is generated at 4,000 + 4,000 unless train/test_samples say otherwise.
VISION_DATA = {  # name: (sample shape, classes, train size, test size)
    "mnist1d": ((1, 40), 10, 4000, 4000),
    "cifar10": ((3, 32, 32), 10, 50000, 10000),
    "cifar100": ((3, 32, 32), 100, 50000, 10000),
}
SHAKESPEARE_VOCAB = 256  # byte-level, as trainables.lm.data.load_tokens
# Hutchinson (trainables/vision/hessian.py): per chunk of probes and per sample one forward and
# a backward that keeps its graph (3 forwards' worth), per probe a backward through that
# backward (taken as 2× the 2-forward backward it differentiates).
HESSIAN_GRAPH_COST = 3
HESSIAN_PROBE_COST = 4

NOTES = (
    "not counted: optimiser, EMA and projection updates (element-wise, a few FLOPs per parameter per step), "
    "normalisation and activations, data loading, compilation, checkpoints",
    "GPU time assumes the MFU on every pass; a trial holding a fraction g of a GPU gets that fraction of it",
)


class CostError(ValueError):
    """A cost option that cannot be used (an unknown GPU, an MFU outside (0, 1], no GPUs)."""


@dataclass(frozen=True)
class Work:
    """One kind of pass of a trial. Args: what: a name; flops: its FLOPs in the whole trial;
    math: the arithmetic it runs in (a ``MATH`` key); items: tokens or samples it processes."""

    what: str
    flops: float
    math: str
    items: int


@dataclass(frozen=True)
class TrialCost:
    """The cost of one trial.

    Args:
        point: the trial's grid point (its axis values).
        unit: ``"token"`` or ``"sample"``.
        basis: how the FLOPs per item were found, one line.
        train_flops_per_item: training FLOPs per token or sample (forward and backward).
        work: its passes: training first, then evaluation and the rest.
    """

    point: Mapping[str, Any]
    unit: str
    basis: str
    train_flops_per_item: float
    work: tuple[Work, ...]

    @property
    def flops(self) -> float:
        return sum(w.flops for w in self.work)

    @property
    def trained(self) -> int:
        return sum(w.items for w in self.work if w.what == "train")

    @property
    def evaluated(self) -> int:
        return sum(w.items for w in self.work if w.what != "train")

    def gpu_seconds(self, peaks: Mapping[str, float], mfu: float) -> float:
        """Seconds on one whole GPU: each pass's FLOPs at the peak of its arithmetic × MFU."""
        return sum(w.flops / (peaks[w.math] * mfu) for w in self.work)


@dataclass(frozen=True)
class CostEstimate:
    """A study's estimated cost.

    Args:
        study, trainable: the study's name and trainable.
        gpu, mfu, gpus: the GPU model, the assumed model FLOPs utilisation, the cluster's GPUs.
        trials: every trial's cost, in grid order (empty when the trainable has no FLOP model).
        ray_trials: each Ray trial's trial indices (a packed study trains several in one).
        gpu_share: GPUs per Ray trial (the spec's ``resources.gpu``).
        slots: Ray trials at once on the cluster, or 0 when none fits.
        wall_seconds: the study's wall time, or None (``wall_note`` says why).
        notes: what the estimate leaves out or assumes.
    """

    study: str
    trainable: str
    gpu: str
    mfu: float
    gpus: int
    trials: tuple[TrialCost, ...]
    ray_trials: tuple[tuple[int, ...], ...] = ()
    gpu_share: float = 0.0
    slots: int = 0
    wall_seconds: float | None = None
    wall_note: str = ""
    notes: tuple[str, ...] = ()

    @property
    def supported(self) -> bool:
        return bool(self.trials)

    @property
    def peaks(self) -> Mapping[str, float]:
        return GPU_PEAKS[self.gpu]

    @property
    def flops(self) -> float:
        return sum(t.flops for t in self.trials)

    @property
    def gpu_hours(self) -> float:
        """GPU-hours of compute (each trial on one whole GPU at the stated MFU)."""
        return sum(t.gpu_seconds(self.peaks, self.mfu) for t in self.trials) / 3600

    @property
    def wall_hours(self) -> float | None:
        return None if self.wall_seconds is None else self.wall_seconds / 3600


# ---------------------------------------------------------------- per-trial FLOPs


@functools.lru_cache(maxsize=32)
def gpt_flops_per_token(model: str, context: int, vocab_size: int) -> tuple[float, str]:
    """``GPT.flops_per_token`` of a named architecture (built on the meta device: no memory,
    no initialisation cost) and a one-line account of its terms."""
    import torch

    from trainables.models.gpt import GPT, model_config

    config = model_config(model, block_size=context, vocab_size=vocab_size)
    with torch.device("meta"):
        gpt = GPT(config)
    n = gpt.num_params(non_embedding=True)
    basis = (f"{model}: 6N + 12·L·H·Q·T = {gpt.flops_per_token():.3g} FLOPs per token trained (N {n / 1e6:.1f}M, "
             f"L {config.n_layer}, H {config.n_head}, Q {config.n_embd // config.n_head}, T {context})")
    return gpt.flops_per_token(), basis


def forward_flops(model, sample_shape: Sequence[int]) -> int:
    """FLOPs of one forward pass of ``model`` on one sample, counted by torch's
    ``FlopCounterMode`` (matrix products and convolutions, 2 per multiply-add)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    model.eval()  # batch statistics of one sample would be degenerate; the FLOPs are the same
    counter = FlopCounterMode(display=False)
    device = next(iter(model.parameters()), torch.empty(0)).device  # meta: shapes only, no memory
    with torch.no_grad(), counter:
        model(torch.zeros(1, *sample_shape, device=device))
    model.train(was_training)
    return counter.get_total_flops()


@functools.lru_cache(maxsize=32)
def vision_forward_flops(model: str, width: int, dataset: str) -> tuple[int, bool]:
    """Forward FLOPs per sample of the vision trainable's model (built as the trainable builds
    it) and whether it has BatchNorm (the EMA re-estimates its statistics)."""
    import torch

    from trainables.vision.config import VisionConfig
    from trainables.vision.data import VisionData
    from trainables.vision.train import build_model

    shape, classes, _, _ = VISION_DATA[dataset]
    empty = torch.empty(0, *shape)  # build_model reads only the shapes and the class count
    data = VisionData(empty, torch.empty(0, dtype=torch.long), empty, torch.empty(0, dtype=torch.long), classes,
                      dataset)
    with torch.device("meta"):  # no weights allocated: a dry run of any width costs no memory
        net = build_model(VisionConfig(model=model, width=width, dataset=dataset), data)
    has_norm = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in net.modules())
    return forward_flops(net, shape), has_norm


def lm_trial_cost(config: Mapping[str, Any], point: Mapping[str, Any]) -> TrialCost:
    from trainables.lm.config import LMConfig
    from trainables.lm.data import GPT2_VOCAB

    cfg = build_config(LMConfig, config)
    vocab = SHAKESPEARE_VOCAB if cfg.dataset == "shakespeare" else GPT2_VOCAB
    per_token, basis = gpt_flops_per_token(cfg.model, cfg.context, vocab)
    fp32_math = "tf32" if cfg.tf32 else "fp32"
    math_mode = fp32_math if cfg.precision == "fp32" else "bf16"
    total_steps = cfg.steps + cfg.tail_steps
    reports = -(-total_steps // cfg.eval_every)  # every eval_every steps and at the last
    trained = total_steps * cfg.tokens_per_step
    per_pass = reports * cfg.eval_batches * cfg.batch_size * cfg.context
    forward = per_token / 3  # 6N + 12LHQT is forward (2N + 4LHQT) plus a backward of twice that
    work = [Work("train", per_token * trained, math_mode, trained),
            Work("eval", 2 * forward * per_pass, math_mode, 2 * per_pass)]  # validation + training split
    if cfg.ema_decay > 0:  # the EMA copy is float32; under pure bf16 nothing autocasts it
        work.append(Work("ema eval", forward * per_pass, fp32_math if cfg.precision == "bf16" else math_mode, per_pass))
    return TrialCost(dict(point), "token", basis, per_token, tuple(work))


def vision_trial_cost(config: Mapping[str, Any], point: Mapping[str, Any]) -> TrialCost:
    from trainables.vision.config import VisionConfig

    cfg = build_config(VisionConfig, config)
    width = cfg.width or (32 if cfg.model == "cnn1d-si" else 64)
    forward, has_norm = vision_forward_flops(cfg.model, width, cfg.dataset)
    _, classes, full_train, full_test = VISION_DATA[cfg.dataset]
    n_train = min(cfg.train_samples, full_train) if cfg.train_samples else full_train
    n_test = min(cfg.test_samples, full_test) if cfg.test_samples else full_test
    # fp32 convolutions run in TF32 on CUDA by default (torch.backends.cudnn.allow_tf32), and they dominate
    math_mode = "tf32" if cfg.precision == "fp32" else "bf16"
    steps_per_epoch = n_train // cfg.batch_size
    epoch_samples = steps_per_epoch * cfg.batch_size  # the last partial batch is dropped
    hessian_n = min(n_train, max(1, cfg.hessian_samples // classes) * classes)
    chunks = -(-cfg.hessian_probes // 10)  # trainables.vision.hessian.PROBES_PER_PASS
    hessian_flops = hessian_n * forward * (chunks * HESSIAN_GRAPH_COST + cfg.hessian_probes * HESSIAN_PROBE_COST)
    hessian_items = hessian_n * (chunks + cfg.hessian_probes)

    reports = hessians = branches = 0
    for epoch in range(1, cfg.epochs + 1):  # the report rule of trainables/vision/train.py
        last = epoch == cfg.epochs
        hessian_due = bool(cfg.hessian_every and cfg.hessian_probes and (epoch % cfg.hessian_every == 0 or last))
        finetune_due = bool(cfg.finetune_every and epoch % cfg.finetune_every == 0)
        if last or hessian_due or finetune_due or epoch % cfg.eval_every == 0:
            reports += 1
            hessians += hessian_due
            branches += finetune_due

    full_train_eval = n_train if cfg.train_eval == "full" else 0
    trained = cfg.epochs * epoch_samples
    work = [Work("train", 3 * forward * trained, math_mode, trained)]
    evaluated = reports * (full_train_eval + n_test)
    work.append(Work("eval", forward * evaluated, math_mode, evaluated))
    if cfg.ema_decay > 0:
        ema = reports * ((n_train if has_norm else 0) + n_test)  # BN statistics pass, then the test set
        work.append(Work("ema eval", forward * ema, math_mode, ema))
    if hessians:  # Tr(H) is computed in fp32 (TF32 convolutions on CUDA)
        work.append(Work("hessian", hessians * hessian_flops, "tf32", hessians * hessian_items))
    if branches:
        branch_trained = cfg.finetune_epochs * epoch_samples
        branch_eval = full_train_eval + n_test
        work.append(Work("finetune", branches * forward * (3 * branch_trained + branch_eval), math_mode,
                         branches * (branch_trained + branch_eval)))
        if cfg.hessian_probes:
            work.append(Work("finetune hessian", branches * hessian_flops, "tf32", branches * hessian_items))
    basis = (f"{cfg.model} (width {width}) on {cfg.dataset}: {forward:.3g} forward FLOPs per sample "
             f"(FlopCounterMode), 3× per trained sample")
    return TrialCost(dict(point), "sample", basis, 3 * forward, tuple(work))


COST_MODELS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], TrialCost]] = {
    "lm": lm_trial_cost,
    "vision": vision_trial_cost,
}


# ---------------------------------------------------------------- the study


def concurrent_trials(gpu_per_trial: float, gpus: int, max_concurrent: int | None = None) -> int:
    """Ray trials that run at once on ``gpus`` GPUs: a fractional trial shares one GPU with
    ``floor(1/g)`` others (Ray packs fractions within a GPU), a whole-GPU trial holds g of them."""
    if gpu_per_trial <= 0:
        raise CostError("resources.gpu is 0: the trials run on CPUs, which the cost table does not hold")
    if gpu_per_trial <= 1:
        slots = gpus * math.floor(1 / gpu_per_trial + 1e-9)
    else:
        slots = gpus // math.ceil(gpu_per_trial)
    return min(slots, max_concurrent) if max_concurrent else slots


def packed_wall_seconds(durations: Sequence[float], slots: int) -> float:
    """Wall time of running ``durations`` in order on ``slots`` parallel slots, each trial
    starting on the first slot that frees up (Ray Tune's FIFO order over pending trials)."""
    if slots < 1:
        raise CostError("no slot to run a trial on")
    free_at = [0.0] * min(slots, max(len(durations), 1))
    for duration in durations:
        start = heapq.heappop(free_at)
        heapq.heappush(free_at, start + duration)
    return max(free_at)


def check_options(gpu: str, mfu: float, gpus: int) -> str:
    """The canonical GPU name; ``CostError`` on a bad option (its message says what to give)."""
    name = next((key for key in GPU_PEAKS if key.lower() == str(gpu).lower()), None)
    if name is None:
        raise CostError(f"unknown GPU {gpu!r}; choose one of {', '.join(GPU_PEAKS)}")
    if isinstance(mfu, bool) or not isinstance(mfu, (int, float)) or not 0 < mfu <= 1:
        raise CostError(f"MFU {mfu!r} is not a fraction in (0, 1] (e.g. 0.4 for 40 %)")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise CostError(f"cluster GPUs {gpus!r}: expected an integer >= 1")
    return name


def _trial_points(spec: StudySpec) -> list[tuple[dict, list[dict]]]:
    """Each trial's grid point and the configs that bound its cost: a searched range stands in
    with its ends (a choice with each value), as spec validation builds them; a grid trial has one."""
    ends = {n: (r.values if r.kind == "choice" else (r.low, r.high)) for n, r in spec.ranges.items()}
    combos = [dict(zip(ends, values)) for values in itertools.product(*ends.values())] or [{}]
    return [(point, [{**spec.config, **spec.case_config(point), **point, **combo} for combo in combos])
            for point in spec.grid() for _ in range(spec.num_samples)]


def estimate(spec: StudySpec, *, gpu: str = DEFAULT_GPU, mfu: float = DEFAULT_MFU,
             gpus: int = DEFAULT_GPUS) -> CostEstimate:
    """The cost of ``spec`` on ``gpus`` GPUs of model ``gpu`` at ``mfu``.

    A trainable without a FLOP model (``COST_MODELS``) gives an estimate with no trials
    (``supported`` False). A search's trial is costed at the most expensive end of its ranges.
    """
    gpu = check_options(gpu, mfu, gpus)
    base = dict(study=spec.name, trainable=spec.trainable, gpu=gpu, mfu=float(mfu), gpus=gpus)
    cost_model = COST_MODELS.get(spec.trainable)
    if cost_model is None:
        return CostEstimate(**base, trials=(), notes=(f"no FLOP model for trainable {spec.trainable}",))
    if spec.num_trials > MAX_COSTED_TRIALS:  # trials are costed one by one: a huge grid is not enumerated
        return CostEstimate(**base, trials=(), notes=(
            f"not estimated: {spec.num_trials:,} trials, more than the {MAX_COSTED_TRIALS:,} costed one by one; "
            f"dry-run a slice of the grid (e.g. --set axes.seed=[0]) and scale",))
    peaks = GPU_PEAKS[gpu]
    trials, seen = [], {}
    for point, configs in _trial_points(spec):
        costs = []
        for config in configs:  # seeds (and other axes a cost does not read) repeat a config: cost it once
            key = (repr(sorted((k, repr(v)) for k, v in config.items() if k != "seed")),
                   repr(sorted((k, repr(v)) for k, v in point.items() if k != "seed")))
            if key not in seen:
                seen[key] = cost_model(config, point)
            costs.append(dataclasses.replace(seen[key], point=point))
        trials.append(max(costs, key=lambda c: c.gpu_seconds(peaks, mfu)))

    if spec.pack > 1:
        from study.packs import pack_groups

        ray_trials = tuple(tuple(group) for group in pack_groups(spec))
    else:
        ray_trials = tuple((i,) for i in range(len(trials)))
    notes = list(NOTES)
    if spec.search != "grid" or spec.scheduler or spec.stop:
        notes.append("every trial is counted to its end (early stopping and searched ranges make it an upper bound)")
    share = spec.resources.gpu
    try:
        slots = concurrent_trials(share, gpus, spec.max_concurrent)
    except CostError as exc:
        return CostEstimate(**base, trials=tuple(trials), ray_trials=ray_trials, gpu_share=share,
                            wall_note=f"wall time not estimated: {exc}", notes=tuple(notes))
    if slots == 0:
        return CostEstimate(**base, trials=tuple(trials), ray_trials=ray_trials, gpu_share=share,
                            wall_note=f"wall time not estimated: a trial needs {share:g} GPUs, the cluster has {gpus}",
                            notes=tuple(notes))
    # a trial holding a fraction g of a GPU runs at that fraction of its speed; a pack trains its members in turn
    slowdown = 1 / share if share < 1 else 1.0
    if share > 1:
        notes.append(f"a trial holds {share:g} GPUs but trains on one (the trainables are single-device)")
    durations = [slowdown * sum(trials[i].gpu_seconds(peaks, mfu) for i in members) for members in ray_trials]
    return CostEstimate(**base, trials=tuple(trials), ray_trials=ray_trials, gpu_share=share, slots=slots,
                        wall_seconds=packed_wall_seconds(durations, slots), notes=tuple(notes))


# ---------------------------------------------------------------- printing


def _hours(hours: float) -> str:
    if hours < 1:
        return f"{hours * 60:.1f} min"
    if hours < 48:
        return f"{hours:.1f} h"
    return f"{hours / 24:.1f} days"


def format_estimate(est: CostEstimate) -> list[str]:
    """The lines ``--dry-run`` prints: the GPU and MFU, how FLOPs were counted, one line per
    group of trials that cost the same, the study total, the wall time, what is left out."""
    if not est.supported:
        return [f"cost: not estimated ({'; '.join(est.notes)})"]
    peaks = est.peaks
    lines = [f"cost estimate on {est.gpu} (dense peak TFLOP/s: "
             + ", ".join(f"{m} {peaks[m] / 1e12:g}" for m in MATH) + f") at {est.mfu:.0%} MFU:"]
    for basis in dict.fromkeys(t.basis for t in est.trials):
        lines.append(f"  {basis}")

    groups: dict[tuple, list[TrialCost]] = {}
    for trial in est.trials:
        groups.setdefault((trial.basis, trial.work), []).append(trial)
    for members in groups.values():
        trial = members[0]
        # label a group with the axis values its members share (when the trials differ at all)
        label = ""
        if len(groups) > 1:
            shared = {k: v for k, v in trial.point.items() if all(m.point.get(k) == v for m in members)}
            label = f" ({', '.join(f'{k}={v}' for k, v in shared.items())})" if shared else ""
        count = f"{len(members)} trials{label}, each" if len(est.trials) > 1 else "the trial"
        passes = ", ".join(f"{w.what} {w.flops:.3g}" for w in trial.work)
        lines.append(f"  {count}: {trial.trained:.3g} {trial.unit}s trained + {trial.evaluated:.3g} evaluated; "
                     f"{trial.flops:.3g} FLOPs ({passes}); {trial.gpu_seconds(peaks, est.mfu) / 3600:.3g} GPU-hours")
    lines.append(f"  study: {len(est.trials)} trials, {est.flops:.3g} FLOPs, {est.gpu_hours:.4g} GPU-hours")
    if est.wall_seconds is None:
        lines.append(f"  {est.wall_note}")
    else:
        packed = f" in {len(est.ray_trials)} Ray trials" if len(est.ray_trials) != len(est.trials) else ""
        capped = est.slots < concurrent_trials(est.gpu_share, est.gpus)
        lines.append(f"  wall time: {_hours(est.wall_hours)} on {est.gpus} {est.gpu} ({est.slots} trials{packed} at "
                     f"once: resources.gpu {est.gpu_share:g}" + (", max_concurrent" if capped else "") + ")")
    lines += [f"  {note}" for note in est.notes]
    return lines
