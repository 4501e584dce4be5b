"""The vision trainable: models, data, optimiser, Hessian, schedules, resume, end to end (fast)."""

import math
import os
import pickle
import random

import numpy as np
import pytest
import torch
import torch.nn as nn

from trainables.models.cnn import CNN1d, CNN1dConfig, ScaleInvariantCNN1d
from trainables.models.resnet import PreActResNet, ResNetConfig
from trainables.models.vgg import VGG, VGGConfig
from trainables.registry import ConfigError
from trainables.schedules import lr_at
from trainables.session import BareSession
from trainables.vision.data import CIFAR_MEAN, CIFAR_STD, DeviceBatches, balanced_subset, load_dataset, read_cifar_batch
from trainables.vision.hessian import hutchinson_trace, rademacher_like
from trainables.vision.optim import SphereProjection, global_norm, make_optimizer, weight_decay_groups
from trainables.vision.train import run

# A run of a few seconds on the embedded data: 512 training / 256 test signals, 8 steps per epoch.
TINY = {"model": "cnn1d-si", "width": 8, "train_samples": 512, "test_samples": 256, "batch_size": 64,
        "eval_batch_size": 256, "epochs": 4, "lr": 0.1, "momentum": 0.9, "weight_decay": 1e-3,
        "schedule": "step", "hessian_samples": 100, "hessian_batch": 50, "hessian_probes": 4,
        "threads": 1}


def trainable(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def frozen(model):
    return sum(p.numel() for p in model.parameters() if not p.requires_grad)


# ---------------------------------------------------------------- parameter counts by hand


def conv(c_in, c_out, k, bias):  # weights k·c_in·c_out (+ c_out biases)
    return k * c_in * c_out + (c_out if bias else 0)


def test_cnn1d_parameter_count():
    model = ScaleInvariantCNN1d(CNN1dConfig())  # width 32
    assert trainable(model) == 1 * 32 * 5 + 32 * 32 * 3 + 32 * 64 * 3 + 64 * 64 * 3 == 21664
    assert frozen(model) == 64 * 5 * 10  # the frozen bias-free head


def test_plain_cnn1d_parameter_count_shapes_and_init():
    model = CNN1d(CNN1dConfig())  # width 32: the same convs with biases, a trainable head with bias
    convs = conv(1, 32, 5, True) + conv(32, 32, 3, True) + conv(32, 64, 3, True) + conv(64, 64, 3, True)
    assert trainable(model) == convs + 64 * 5 * 10 + 10 == 25_066 and frozen(model) == 0
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())
    x = torch.randn(7, 1, 40)
    assert model(x).shape == (7, 10)
    assert CNN1d(CNN1dConfig(width=8, num_classes=3))(x).shape == (7, 3)
    for c in model.convs:  # He init, fan-in: N(0, 2/(k·C_in)), biases 0
        assert c.bias.abs().max() == 0
        expected = math.sqrt(2.0 / (c.kernel_size[0] * c.in_channels))
        assert abs(c.weight.std().item() - expected) < 0.1 * expected


def test_plain_cnn1d_is_not_scale_invariant():
    torch.manual_seed(0)
    model, x = CNN1d(CNN1dConfig(width=8)), torch.randn(16, 1, 40)
    assert model.scale_invariant_groups() == [] and not model.fully_scale_invariant
    for names in (["convs.1.weight"], ["convs.1.weight", "convs.1.bias"],
                  [n for n, _ in model.named_parameters()]):  # one layer, or every parameter at once
        before, after = outputs_after_scaling(model, x, names, 3.0)
        assert (after - before).abs().max() > 1e-3


def test_plain_cnn1d_trains_with_decay_on_every_parameter_and_refuses_a_projection():
    session = BareSession()
    run({**TINY, "model": "cnn1d", "momentum": 0.0, "ema_decay": 0.0, "hessian_probes": 0}, session)
    last = session.reports[-1]
    assert session.status == "finished" and last["test_error"] < 0.9
    assert last["decayed_tensors"] == 10 and last["decayed_params"] == trainable(CNN1d(CNN1dConfig(width=8)))
    assert "effective_lr" not in last  # nothing scale-invariant to define it on
    with pytest.raises(ConfigError, match="no scale-invariant layers"):
        run({**TINY, "model": "cnn1d", "projection": "per_group"}, BareSession())


def test_vgg_parameter_counts():
    classifier = (512 * 512 + 512) * 2 + 512 * 10 + 10
    vgg16_convs = (conv(3, 64, 9, True) + conv(64, 64, 9, True) + conv(64, 128, 9, True) + conv(128, 128, 9, True)
                   + conv(128, 256, 9, True) + 2 * conv(256, 256, 9, True) + conv(256, 512, 9, True)
                   + 5 * conv(512, 512, 9, True))
    assert trainable(VGG(VGGConfig(depth="vgg16"))) == vgg16_convs + classifier == 15_245_130
    vgg11_convs = (conv(3, 64, 9, True) + conv(64, 128, 9, True) + conv(128, 256, 9, True) + conv(256, 256, 9, True)
                   + conv(256, 512, 9, True) + 3 * conv(512, 512, 9, True))
    assert trainable(VGG(VGGConfig(depth="vgg11"))) == vgg11_convs + classifier == 9_750_922
    assert trainable(VGG(VGGConfig(depth="vgg11", width=8))) < 200_000  # width scales every layer


def preact_resnet18_count(w, si):
    bn = lambda c: 0 if si else 2 * c  # noqa: E731  (gain and shift, or none)
    total = bn(3) + conv(3, w, 9, si)  # input BN, stem
    c_in = w
    for c_out in (w, 2 * w, 4 * w, 8 * w):
        for b in range(2):
            total += bn(c_in) + conv(c_in, c_out, 9, si) + bn(c_out) + conv(c_out, c_out, 9, si)
            if c_in != c_out:
                total += conv(c_in, c_out, 1, si)  # 1×1 shortcut (its BN has no parameters)
            c_in = c_out
    total += bn(8 * w)  # head BN
    return total, 8 * w * 10 + 10  # trainable, linear head


def test_preact_resnet18_parameter_counts():
    standard = PreActResNet(ResNetConfig())
    convs, head = preact_resnet18_count(64, si=False)
    assert trainable(standard) == convs + head == 11_172_176
    sphere = PreActResNet(ResNetConfig(scale_invariant=True))
    convs, head = preact_resnet18_count(64, si=True)
    assert (trainable(sphere), frozen(sphere)) == (convs, head)
    assert trainable(PreActResNet(ResNetConfig(width=8))) == sum(preact_resnet18_count(8, si=False))


# ---------------------------------------------------------------- scale invariance


def outputs_after_scaling(model, x, names, factor):
    """Outputs before and after multiplying the named parameters by ``factor``, in float64 with
    batch statistics and BatchNorm's eps made negligible, so that invariance is exact to rounding."""
    model.double().train()
    x = x.double()
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eps = 1e-20
    with torch.no_grad():
        before = model(x)
        params = dict(model.named_parameters())
        for name in names:
            params[name].mul_(factor)
        after = model(x)
    return before, after


@pytest.mark.parametrize("make, shape", [
    (lambda: ScaleInvariantCNN1d(CNN1dConfig(width=8)), (16, 1, 40)),
    (lambda: PreActResNet(ResNetConfig(width=4, scale_invariant=True)), (8, 3, 32, 32)),
    (lambda: PreActResNet(ResNetConfig(width=4, blocks=(3, 4, 6, 3))), (8, 3, 32, 32)),
])
def test_scaling_a_scale_invariant_group_by_3_leaves_the_output_unchanged(make, shape):
    torch.manual_seed(0)
    model, x = make(), torch.randn(shape)
    groups = model.scale_invariant_groups()
    assert groups and sorted(n for g in groups for n in g) == sorted(set(n for g in groups for n in g))
    for group in groups:
        before, after = outputs_after_scaling(model, x, group, 3.0)
        torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)
    if model.fully_scale_invariant:  # all trainable parameters at once
        names = [n for n, p in model.named_parameters() if p.requires_grad]
        assert sorted(names) == sorted(n for g in groups for n in g)
        before, after = outputs_after_scaling(model, x, names, 3.0)
        torch.testing.assert_close(after, before, rtol=1e-9, atol=1e-9)


def test_scaling_outside_a_group_changes_the_output():
    torch.manual_seed(0)
    resnet = PreActResNet(ResNetConfig(width=4))
    x = torch.randn(8, 3, 32, 32)
    before, after = outputs_after_scaling(resnet, x, ["layer1.0.conv2.weight"], 3.0)  # half a stream group
    assert (after - before).abs().max() > 1e-2
    vgg = VGG(VGGConfig(depth="vgg11", width=4))
    assert vgg.scale_invariant_groups() == []
    before, after = outputs_after_scaling(vgg, x, ["features.0.weight", "features.0.bias"], 3.0)
    assert (after - before).abs().max() > 1e-4


# ---------------------------------------------------------------- Hutchinson


def quadratic(matrix):
    w = torch.zeros(matrix.shape[0], dtype=torch.float64, requires_grad=True)
    halves = [matrix * 0.25, matrix * 0.75]  # the loss as a sum over two "batches"
    return w, (lambda a: 0.5 * w @ a @ w), halves


def test_hutchinson_on_a_quadratic_is_within_5_percent():
    torch.manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(30, 30, dtype=torch.float64))
    eigenvalues = torch.linspace(0.5, 20.0, 30, dtype=torch.float64)
    matrix = q @ torch.diag(eigenvalues) @ q.T
    w, loss, batches = quadratic(matrix)
    gen = torch.Generator().manual_seed(1)
    estimate, used = hutchinson_trace(loss, batches, [w], max_probes=400, tol=0.0, generator=gen)
    assert used == 400
    assert estimate == pytest.approx(eigenvalues.sum().item(), rel=0.05)


def test_hutchinson_is_exact_for_a_diagonal_hessian_and_stops_by_the_tolerance():
    w, loss, batches = quadratic(torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64)))
    gen = torch.Generator().manual_seed(0)
    estimate, used = hutchinson_trace(loss, batches, [w], max_probes=100, tol=1e-3, generator=gen)
    # v_i² = 1 for Rademacher v, so every probe gives the trace; the running mean stops moving at probe 2
    assert (estimate, used) == (pytest.approx(55.0, abs=1e-12), 2)


def test_hutchinson_on_a_network_averages_exact_vhv_over_its_probes():
    """Double-backprop HVPs, summed over batches and shared by a chunk of probes, give exactly
    the vᵀHv of the explicit Hessian for the same Rademacher probes."""
    torch.manual_seed(0)
    model = ScaleInvariantCNN1d(CNN1dConfig(width=2)).double().eval()
    x, y = torch.randn(32, 1, 40, dtype=torch.float64), torch.randint(0, 10, (32,))
    batches = [(x[:20], y[:20]), (x[20:], y[20:])]
    params = [p for p in model.parameters() if p.requires_grad]
    loss = lambda b: nn.functional.cross_entropy(model(b[0]), b[1], reduction="sum") / 32  # noqa: E731
    grads = torch.autograd.grad(loss((x, y)), params, create_graph=True)
    flat = torch.cat([g.flatten() for g in grads])
    hessian = torch.stack([torch.cat([h.flatten() for h in torch.autograd.grad(g, params, retain_graph=True)])
                           for g in flat])  # (94, 94), one row per parameter
    probes = 25  # two full chunks and a partial one
    estimate, used = hutchinson_trace(loss, batches, params, max_probes=probes, tol=0.0,
                                      generator=torch.Generator().manual_seed(3))
    replay = torch.Generator().manual_seed(3)
    vs = [torch.cat([v.flatten() for v in rademacher_like(params, replay)]) for _ in range(probes)]
    assert used == probes
    assert estimate == pytest.approx(sum((v @ hessian @ v).item() for v in vs) / probes, rel=1e-9)
    assert set(torch.cat(vs).tolist()) == {-1.0, 1.0}


# ---------------------------------------------------------------- SGDW vs L2, by hand


@pytest.mark.parametrize("mode", ["l2", "decoupled"])
def test_sgd_weight_decay_two_steps_by_hand(mode):
    """Model f(x) = w·x with w = (w1, w2), loss ½(f(x) − t)²; momentum μ, LR η, λ; two steps."""
    x, t, eta, lam, mu = (1.0, 2.0), 1.0, 0.1, 0.5, 0.9
    model = nn.Linear(2, 1, bias=False).double()
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0]]))
    opt = make_optimizer(weight_decay_groups(model, weight_decay=lam, rule="all"), lr=eta, momentum=mu, mode=mode)
    for _ in range(2):
        loss = 0.5 * (model(torch.tensor([x], dtype=torch.float64)) - t).pow(2).sum()
        loss.backward()
        opt.step()
        opt.zero_grad()

    def grad(w):  # ∇ of ½(w·x − t)²
        r = w[0] * x[0] + w[1] * x[1] - t
        return [r * x[0], r * x[1]]

    w, buf = [0.5, -1.0], None
    for _ in range(2):
        g = grad(w)
        if mode == "l2":  # g ← g + λw, then momentum, then w ← w − η·buf
            g = [gi + lam * wi for gi, wi in zip(g, w)]
        else:  # w ← (1 − ηλ)w first; momentum sees the loss gradient only
            w = [(1 - eta * lam) * wi for wi in w]
        buf = g if buf is None else [mu * b + gi for b, gi in zip(buf, g)]
        w = [wi - eta * bi for wi, bi in zip(w, buf)]
    assert model.weight.flatten().tolist() == pytest.approx(w, rel=1e-12)
    # the two variants give different weights after the second step with momentum
    # worked on paper: both give (0.725, −0.45) after step 1; they differ after step 2
    expected = {"l2": [1.00875, 0.3025], "decoupled": [1.03125, 0.2575]}
    assert w == pytest.approx(expected[mode], rel=1e-12)


def test_weight_decay_groups_rule():
    model = PreActResNet(ResNetConfig(width=4))
    every = weight_decay_groups(model, weight_decay=0.1, rule="all")
    assert len(every) == 1 and len(every[0]["params"]) == len(list(model.parameters()))
    weights = weight_decay_groups(model, weight_decay=0.1, rule="weights")
    assert all(p.dim() >= 2 for p in weights[0]["params"]) and all(p.dim() == 1 for p in weights[1]["params"])
    assert weights[1]["weight_decay"] == 0.0
    sphere = PreActResNet(ResNetConfig(width=4, scale_invariant=True))  # the frozen head is in no group
    assert "linear.weight" not in weight_decay_groups(sphere, weight_decay=0.1, rule="all")[0]["names"]


def test_sphere_projection_restores_each_group_norm():
    a, b = torch.full((3,), 2.0), torch.full((4,), 1.0)
    SphereProjection([[a], [b]], [1.0, 4.0])()
    assert global_norm([a]).item() == pytest.approx(1.0) and global_norm([b]).item() == pytest.approx(4.0)


# ---------------------------------------------------------------- schedules


def test_step_and_cosine_schedules_at_chosen_steps():
    step = dict(schedule="step", lr=0.1, total_steps=1000, decay_step=500, decay_lr=1e-4)
    assert [lr_at(s, **step) for s in (0, 499, 500, 999)] == [0.1, 0.1, 1e-4, 1e-4]
    cosine = dict(schedule="cosine", lr=0.1, total_steps=1100, warmup_steps=100, min_lr=0.01)
    assert lr_at(50, **cosine) == pytest.approx(0.05)  # half-way through the warm-up
    assert lr_at(100, **cosine) == pytest.approx(0.1)
    assert lr_at(600, **cosine) == pytest.approx(0.055)  # half-way: min + (lr − min)/2
    assert lr_at(350, **cosine) == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi / 4)) / 2)
    assert lr_at(1100, **cosine) == pytest.approx(0.01)


def test_the_trainable_reports_the_scheduled_lr_of_each_epoch():
    session = BareSession()
    run({**TINY, "epochs": 4, "decay_epoch": 2, "decay_lr": 0.003, "ema_decay": 0.0}, session)
    assert [r["lr"] for r in session.reports] == [0.1, 0.1, 0.003, 0.003]
    assert [r["step"] for r in session.reports] == [8, 16, 24, 32]
    session = BareSession()
    run({**TINY, "epochs": 2, "schedule": "cosine", "min_lr": 0.01, "warmup_epochs": 1, "ema_decay": 0.0}, session)
    last_step_of_epoch_1 = 7  # warm-up: lr · 7/8
    assert session.reports[0]["lr"] == pytest.approx(0.1 * last_step_of_epoch_1 / 8)
    assert session.reports[1]["lr"] == pytest.approx(0.01 + 0.09 * (1 + math.cos(math.pi * 7 / 8)) / 2)


# ---------------------------------------------------------------- data


def write_fake_cifar(root, n_per_batch=20, seed=0, hundred=False):
    """The python-pickle layout of cifar-10-batches-py (or cifar-100-python), tiny."""
    rng = np.random.default_rng(seed)
    folder = os.path.join(root, "cifar-100-python" if hundred else "cifar-10-batches-py")
    os.makedirs(folder)
    names = ["train", "test"] if hundred else [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    written = {}
    for name in names:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 100 if hundred else 10, n_per_batch)]
        key = b"fine_labels" if hundred else b"labels"
        with open(os.path.join(folder, name), "wb") as f:
            pickle.dump({b"batch_label": name.encode(), key: labels, b"data": data}, f, protocol=2)
        written[name] = (data, labels)
    return folder, written


def test_cifar_loader_reads_fake_pickle_batches(tmp_path):
    folder, written = write_fake_cifar(str(tmp_path))
    images, labels = read_cifar_batch(os.path.join(folder, "data_batch_2"))
    assert images.shape == (20, 3, 32, 32) and images.dtype == np.uint8
    assert (images.reshape(20, -1) == written["data_batch_2"][0]).all() and labels.tolist() == written["data_batch_2"][1]
    for data_dir in (str(tmp_path), folder):  # the parent or the folder itself
        data = load_dataset("cifar10", data_dir=data_dir)
        assert data.x_train.shape == (100, 3, 32, 32) and data.x_test.shape == (20, 3, 32, 32)
        assert data.num_classes == 10 and data.sample_shape == (3, 32, 32)
        assert data.y_train.tolist() == sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
        raw = written["data_batch_1"][0][3].reshape(3, 32, 32)  # image 3, channel c, row 5, column 7
        for c in range(3):
            expected = (raw[c, 5, 7] / 255.0 - CIFAR_MEAN[c]) / CIFAR_STD[c]
            assert data.x_train[3, c, 5, 7].item() == pytest.approx(expected, rel=1e-5)
    subset = load_dataset("cifar10", data_dir=str(tmp_path), train_samples=30, test_samples=7)
    assert (len(subset.y_train), len(subset.y_test)) == (30, 7)


def test_the_authors_vgg_input_pipeline_normalises_twice(tmp_path):
    """The paper's VGG code: its loader normalises with std (0.2023, 0.1994, 0.2010), then VGG's
    forward applies ImageNet's Normalize; the first conv must see exactly that."""
    from trainables.vision.config import VisionConfig
    from trainables.vision.train import build_model

    folder, written = write_fake_cifar(str(tmp_path))
    raw = written["data_batch_1"][0][:2].reshape(2, 3, 32, 32) / 255.0  # the first two images, in [0, 1]
    loader = ((raw - np.array([0.4914, 0.4822, 0.4465])[:, None, None])
              / np.array([0.2023, 0.1994, 0.2010])[:, None, None])
    authors = (loader - np.array([0.485, 0.456, 0.406])[:, None, None]) / np.array([0.229, 0.224, 0.225])[:, None, None]
    ours = (raw - np.array([0.4914, 0.4822, 0.4465])[:, None, None]) / np.array([0.2471, 0.2435, 0.2616])[:, None, None]
    seen = {}
    for input_norm, expected in (("authors-vgg", authors), ("cifar", ours)):
        config = VisionConfig(model="vgg11", dataset="cifar10", data_dir=folder, width=4, input_norm=input_norm)
        data = load_dataset("cifar10", data_dir=folder, input_norm=input_norm)
        model = build_model(config, data)
        model.features[0].register_forward_pre_hook(lambda module, args: seen.update(x=args[0].detach().clone()))
        model(data.x_train[:2])
        np.testing.assert_allclose(seen["x"].numpy(), expected, rtol=1e-5, atol=1e-5)
    # per channel, the authors' inputs are s / (s' · S) = 5.33, 5.45, 5.78 times ours, and shifted
    scale = (authors[0, :, 0, 0] - authors[1, :, 0, 0]) / (ours[0, :, 0, 0] - ours[1, :, 0, 0])
    np.testing.assert_allclose(scale, [5.334, 5.452, 5.784], atol=1e-3)
    assert "input_mean" not in model.state_dict()  # constants, not state: checkpoints are unchanged


def test_cifar100_loader_and_clear_errors(tmp_path):
    write_fake_cifar(str(tmp_path / "c100"), hundred=True)
    data = load_dataset("cifar100", data_dir=str(tmp_path / "c100"))
    assert data.num_classes == 100 and data.x_train.shape == (20, 3, 32, 32)
    with pytest.raises(ValueError, match="needs data_dir"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="absolute path"):
        load_dataset("cifar10", data_dir="relative/folder")
    with pytest.raises(FileNotFoundError, match="set download: true"):
        load_dataset("cifar10", data_dir=str(tmp_path))
    try:
        import torchvision  # noqa: F401
    except ImportError:  # not a dependency: asking for a download says how to get one
        with pytest.raises(RuntimeError, match="download: true needs torchvision"):
            load_dataset("cifar10", data_dir=str(tmp_path / "new"), download=True)
    (tmp_path / "bad").mkdir()
    with open(tmp_path / "bad" / "data_batch_1", "wb") as f:
        pickle.dump({b"nothing": 1}, f)
    with pytest.raises(ValueError, match="not a CIFAR python batch"):
        read_cifar_batch(str(tmp_path / "bad" / "data_batch_1"))


def test_mnist1d_is_generated_reproducibly_without_touching_global_rngs():
    random.seed(5)
    np.random.seed(5)
    expected_py, expected_np = random.random(), np.random.rand()
    random.seed(5)
    np.random.seed(5)
    data = load_dataset("mnist1d")
    assert (random.random(), np.random.rand()) == (expected_py, expected_np)
    assert data.x_train.shape == (4000, 1, 40) and data.sample_shape == (1, 40) and data.num_classes == 10
    assert len(data.y_test) == 4000
    assert abs(data.x_train.mean().item()) < 1e-5 and data.x_train.std().item() == pytest.approx(1.0, abs=1e-4)
    assert torch.bincount(data.y_train).min() > 350  # all ten classes
    again = load_dataset("mnist1d")
    assert torch.equal(again.x_train, data.x_train) and torch.equal(again.y_test, data.y_test)
    other = load_dataset("mnist1d", data_seed=7, train_samples=100, test_samples=100)
    assert other.x_train.shape == (100, 1, 40)


def test_device_batches_shuffle_drop_last_and_augment():
    x = torch.arange(10 * 3 * 32 * 32, dtype=torch.float32).view(10, 3, 32, 32)
    y = torch.arange(10)
    batches = DeviceBatches(x, y, 4, device=torch.device("cpu"), shuffle=True, drop_last=True,
                            generator=torch.Generator().manual_seed(0))
    seen = [yb for _, yb in batches.epoch()]
    assert len(seen) == len(batches) == 2 and len(torch.cat(seen).unique()) == 8
    augmented = DeviceBatches(x, y, 5, device=torch.device("cpu"), shuffle=False, augment=True,
                              generator=torch.Generator().manual_seed(0))
    padded = nn.functional.pad(x, (4, 4, 4, 4))
    for xb, yb in augmented.epoch():
        for image, label in zip(xb, yb):  # every output is one crop of the padded image, maybe flipped
            crops = [padded[label, :, r:r + 32, c:c + 32] for r in range(9) for c in range(9)]
            assert any(torch.equal(image, crop) or torch.equal(image, crop.flip(2)) for crop in crops)
    with pytest.raises(ValueError, match="mnist1d has no augmentation"):
        DeviceBatches(torch.zeros(4, 1, 40), y[:4], 2, device=torch.device("cpu"), augment=True,
                      generator=torch.Generator())


def test_balanced_subset_takes_the_first_of_each_class():
    labels = torch.tensor([0, 1, 0, 2, 1, 0, 2, 2, 1])
    assert balanced_subset(labels, 6, 3).tolist() == [0, 1, 2, 3, 4, 6]


# ---------------------------------------------------------------- the trainable end to end


CONTRACT = {"epoch", "step", "lr", "train_loss", "train_error", "test_loss", "test_error", "weight_norm",
            "effective_lr", "effective_lr_sqrt", "ema_test_error", "hessian_trace", "finetune_test_error",
            "finetune_train_loss", "finetune_hessian_trace"}


def test_every_metric_of_the_contract_is_reported():
    session = BareSession()
    run({**TINY, "epochs": 2, "decay_epoch": 1, "hessian_every": 1, "finetune_every": 1}, session)
    assert session.status == "finished" and len(session.reports) == 2
    for report in session.reports:
        assert CONTRACT <= set(report)
        assert {f"weight_norm/convs.{i}" for i in range(4)} <= set(report)
        for key in ("train_error", "test_error", "ema_test_error", "finetune_test_error"):
            assert 0.0 <= report[key] <= 1.0
        assert report["hessian_trace"] > 0 and report["finetune_hessian_trace"] > 0
        si_norm = math.sqrt(sum(report[f"weight_norm/convs.{i}"] ** 2 for i in range(4)))
        assert report["effective_lr"] == pytest.approx(report["lr"] / si_norm**2, rel=1e-5)
        assert report["effective_lr_sqrt"] == pytest.approx(report["lr"] / si_norm, rel=1e-5)


def test_resume_from_a_mid_run_state_continues_bit_for_bit():
    config = {**TINY, "epochs": 4, "checkpoint_every": 1, "hessian_every": 2, "finetune_every": 3,
              "projection": "per_group", "projection_every": "step"}
    full = BareSession()
    run(config, full)
    assert len(full.states) == 4 and full.states[1]["epoch"] == 2
    assert full.reports[-1]["train_loss"] < full.reports[0]["train_loss"] - 0.1  # it learns
    resumed = BareSession(restore=full.states[1])
    run(config, resumed)
    timeless = lambda reports: [{k: v for k, v in r.items() if k != "samples_per_s"} for r in reports]  # noqa: E731
    assert timeless(resumed.reports) == timeless(full.reports[2:])
    assert resumed.status == "finished"


def test_global_projection_keeps_the_parameters_on_the_sphere():
    session = BareSession()
    run({**TINY, "epochs": 2, "projection": "global", "projection_every": "step", "projection_radius": 1.0,
         "ema_decay": 0.0}, session)
    for report in session.reports:  # ‖w‖ = 1, so the effective LR is the LR
        assert report["effective_lr"] == pytest.approx(report["lr"], rel=1e-5)
    session = BareSession()
    run({**TINY, "epochs": 2, "projection": "per_group", "projection_every": "epoch", "ema_decay": 0.0,
         "weight_decay": 0.05}, session)
    torch.manual_seed(TINY.get("seed", 0))
    initial = ScaleInvariantCNN1d(CNN1dConfig(width=8))
    for i, conv_layer in enumerate(initial.convs):
        assert session.reports[-1][f"weight_norm/convs.{i}"] == pytest.approx(conv_layer.weight.norm().item(), rel=1e-5)


def test_image_models_train_on_fake_cifar(tmp_path):
    write_fake_cifar(str(tmp_path), n_per_batch=8)
    common = {"dataset": "cifar10", "data_dir": str(tmp_path), "width": 4, "batch_size": 8, "eval_batch_size": 40,
              "epochs": 2, "hessian_every": 1, "hessian_probes": 2, "hessian_samples": 20, "hessian_batch": 10,
              "threads": 1}
    for extra in ({"model": "preact-resnet18-si", "projection": "global", "augment": True},
                  {"model": "vgg11", "weight_decay_mode": "decoupled", "momentum": 0.9, "input_norm": "authors-vgg"},
                  {"model": "preact-resnet18", "projection": "per_group", "precision": "bf16-autocast"}):
        session = BareSession()
        run({**common, **extra}, session)
        assert session.status == "finished", extra
        assert {"test_error", "hessian_trace", "ema_test_error"} <= set(session.reports[-1])
        assert ("effective_lr" in session.reports[-1]) == (extra["model"] != "vgg11")


def test_eval_every_reports_at_its_epochs_at_hessian_epochs_and_at_the_end():
    session = BareSession()
    run({**TINY, "epochs": 5, "eval_every": 3, "hessian_every": 4, "ema_decay": 0.0}, session)
    assert [r["epoch"] for r in session.reports] == [3, 4, 5]
    assert ["hessian_trace" in r for r in session.reports] == [False, True, True]
    assert [r["step"] for r in session.reports] == [24, 32, 40]


def test_divergence_is_a_result():
    session = BareSession()
    run({**TINY, "lr": 1e30, "epochs": 3}, session)
    assert session.status == "diverged" and len(session.reports) == 1
    report = session.reports[0]
    assert 1 <= report["diverged_step"] <= 8 and math.isfinite(report["last_finite_loss"])


@pytest.mark.parametrize("extra, key", [
    ({"model": "vgg16"}, "model"),
    ({"projection": "per_group", "model": "preact-resnet18", "dataset": "cifar10", "data_dir": "/nonexistent"}, "data_dir"),
    ({"projection": "global", "model": "preact-resnet18", "dataset": "cifar10", "data_dir": "/nonexistent"}, "projection"),
    ({"augment": True}, "augment"),
    ({"input_norm": "authors-vgg"}, "input_norm"),
    ({"input_norm": "authors-vgg", "model": "preact-resnet18", "dataset": "cifar10", "data_dir": "/nonexistent"},
     "input_norm"),
    ({"decay_epoch": 9}, "decay_epoch"),
    ({"batch_size": 1000}, "batch_size"),
    ({"lr": -1.0}, "lr"),
    ({"schedule": "linear"}, "schedule"),
])
def test_bad_configs_fail_with_a_message_naming_the_key(extra, key):
    with pytest.raises((ConfigError, ValueError, FileNotFoundError), match=key if key != "data_dir" else "/nonexistent"):
        run({**TINY, **extra}, BareSession())


def test_projection_needs_a_scale_invariant_model(tmp_path):
    write_fake_cifar(str(tmp_path), n_per_batch=8)
    common = {"dataset": "cifar10", "data_dir": str(tmp_path), "width": 4, "batch_size": 8, "epochs": 1}
    with pytest.raises(ConfigError, match="no scale-invariant layers"):
        run({**common, "model": "vgg11", "projection": "per_group"}, BareSession())
    with pytest.raises(ConfigError, match="use a -si model or projection: per_group"):
        run({**common, "model": "preact-resnet18", "projection": "global"}, BareSession())


# ---------------------------------------------------------------- presets


def test_presets_validate_and_follow_the_paper():
    from study import load_spec

    ushape = load_spec("ushape")
    assert ushape.trainable == "vision" and ushape.config["model"] == "preact-resnet18-si"
    assert list(ushape.axes["lr"]) == [1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 2e-3, 3e-3, 4e-3, 5e-3]
    assert (ushape.config["epochs"], ushape.config["decay_epoch"], ushape.config["decay_lr"]) == (200, 100, 1e-4)
    assert ushape.config["projection"] == "global" and ushape.config["projection_radius"] == 1.0
    vgg = load_spec("vgg-large-lr")
    assert vgg.config["model"] == "vgg16" and vgg.config["momentum"] == 0.0
    assert vgg.config["input_norm"] == "authors-vgg"  # the paper's double normalisation
    assert set(vgg.axes["weight_decay"]) == {0.008, 0.0} and set(vgg.axes["lr"]) == {0.1, 0.01}
    resnet = load_spec("resnet18-wd")
    assert set(resnet.axes["weight_decay"]) == {0.0125, 0.0} and set(resnet.axes["lr"]) == {0.08, 0.001}
    tiny = load_spec("ushape-tiny")
    assert tiny.config["dataset"] == "mnist1d" and tiny.resources.cpu == 1
    # what its claims need: ≥ 3 LRs (a U), λ = 0 and λ > 0, seeds for a paired interval, a test set
    # large enough that one error is read to ≈ 0.1 pp (binomial SE at 4 %: 0.11 pp for 32,000)
    assert len(tiny.axes["lr"]) >= 3 and 0.0 in tiny.axes["weight_decay"] and max(tiny.axes["weight_decay"]) > 0
    assert len(tiny.axes["seed"]) >= 4 and tiny.config["test_samples"] >= 30_000


def test_mnist1d_is_kept_on_disk_and_read_back_bit_for_bit(tmp_path, monkeypatch):
    from trainables.vision import data as vision_data

    monkeypatch.setenv("WD_STUDY_CACHE", str(tmp_path))
    generated = []
    real = vision_data._mnist1d_generate
    monkeypatch.setattr(vision_data, "_mnist1d_generate", lambda *a: generated.append(a) or real(*a))
    vision_data._mnist1d.cache_clear()
    first = vision_data._mnist1d(300, 195, 11)  # 495 asked: 500 generated, 50 per class
    (cached,) = tmp_path.glob("mnist1d-*-n500-seed11.npz")
    vision_data._mnist1d.cache_clear()  # a fresh worker process
    again = vision_data._mnist1d(300, 195, 11)
    assert generated == [(500, 11)]
    assert [t.shape[0] for t in again] == [300, 300, 195, 195]
    assert all(torch.equal(a, b) for a, b in zip(first, again))

    cached.write_bytes(b"not an npz")  # damaged: generated again, and the file replaced
    vision_data._mnist1d.cache_clear()
    assert all(torch.equal(a, b) for a, b in zip(first, vision_data._mnist1d(300, 195, 11)))
    assert generated == [(500, 11)] * 2 and np.load(cached)["x"].shape[0] == 500
    vision_data._mnist1d.cache_clear()


def test_an_empty_wd_study_cache_turns_the_disk_cache_off(tmp_path, monkeypatch):
    from trainables.vision import data as vision_data

    monkeypatch.setenv("WD_STUDY_CACHE", "")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    vision_data._mnist1d.cache_clear()
    vision_data._mnist1d(20, 10, 3)
    vision_data._mnist1d.cache_clear()
    assert vision_data.mnist1d_cache_folder() is None and list(tmp_path.rglob("mnist1d-*")) == []
