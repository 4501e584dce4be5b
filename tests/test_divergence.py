"""Divergence: the detector on hand-made loss sequences (spikes that recover, blow-ups that stay, NaN),
then real LM and vision runs, unpacked and packed, with a spike injected into the loss they see."""

import math

import pytest
import torch

from tests.conftest import NANO_LM
from trainables.divergence import DivergenceDetector
from trainables.packing import BarePackSession
from trainables.session import BareSession


def feed(detector, losses, *, every=100, last_is_final=True):
    """Check ``losses`` at steps every, 2·every, ...; the step of the first divergence, or None."""
    for i, loss in enumerate(losses):
        step = (i + 1) * every
        if detector.check(loss, step, final=last_is_final and i + 1 == len(losses)):
            return step
    return None


def test_a_spike_that_recovers_within_the_patience_is_counted_and_the_run_goes_on():
    detector = DivergenceDetector(ratio=2.0, patience=200)
    # minimum 1.0 by step 300; 2.5 > 2 x 1.0 at step 400, 3.0 at 500, back to 1.1 at 600 (200 steps later)
    assert feed(detector, [4.0, 2.0, 1.0, 2.5, 3.0, 1.1, 0.9]) is None
    assert detector.spikes == 1 and detector.last_spike_step == 400 and detector.last_spike_peak == 3.0
    assert detector.metrics() == {"loss_spikes": 1, "last_spike_step": 400, "last_spike_peak": 3.0}
    assert detector.running_min == 0.9 and detector.step is None and detector.blowup_step is None


def test_a_blow_up_that_stays_above_for_the_whole_window_diverges_at_its_start():
    detector = DivergenceDetector(ratio=2.0, patience=200)
    # above 2.0 at steps 300, 400, 500: 200 steps after the start it is still above
    assert feed(detector, [1.5, 1.0, 2.5, 2.2, 2.1, 1.0]) == 500
    assert detector.step == 300 and detector.spikes == 0
    assert "from step 300" in detector.reason and "peak 2.5" in detector.reason


def test_the_running_minimum_ignores_the_blow_up_and_counts_every_recovery():
    detector = DivergenceDetector(ratio=2.0, patience=100)
    # the 2.1 at step 300 is above 2 x 1.0; the next check 1.9 is below: recovered. Then 2.1 again
    # at 500 (the minimum is still 1.0, not 1.9), back at 600: a second spike.
    assert feed(detector, [1.0, 1.5, 2.1, 1.9, 2.1, 1.2]) is None
    assert detector.spikes == 2 and detector.last_spike_step == 500 and detector.last_spike_peak == 2.1
    assert detector.running_min == 1.0


def test_a_loss_exactly_at_the_threshold_is_not_a_blow_up():
    detector = DivergenceDetector(ratio=2.0, patience=0)
    assert feed(detector, [1.0, 2.0, 1.5]) is None and detector.spikes == 0


def test_patience_zero_is_the_old_rule_diverged_at_the_first_check_above():
    detector = DivergenceDetector(ratio=2.0, patience=0)
    assert feed(detector, [1.0, 0.8, 1.7, 1.0]) == 300
    assert detector.step == 300 and detector.last_finite_loss == 1.7


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_a_non_finite_loss_diverges_at_once_whatever_the_patience(bad):
    detector = DivergenceDetector(ratio=2.0, patience=10_000)
    assert feed(detector, [1.0, 0.9, bad, 0.8]) == 300
    assert detector.step == 300 and detector.reason == "non-finite loss"
    assert detector.last_finite_loss == 0.9  # the NaN is not a loss it saw


def test_a_non_finite_loss_inside_a_blow_up_dates_the_divergence_at_the_blow_ups_start():
    detector = DivergenceDetector(ratio=2.0, patience=10_000)
    assert feed(detector, [1.0, 3.0, 5.0, math.nan]) == 400
    assert detector.step == 200 and "at step 400" in detector.reason


def test_a_blow_up_still_open_at_the_last_check_is_a_divergence():
    # The run ends blown up: it never recovered, and its final numbers are those of the blown-up
    # model, so it must not count as finished (documented in trainables/divergence.py).
    detector = DivergenceDetector(ratio=2.0, patience=500)
    assert feed(detector, [1.0, 0.9, 0.8, 5.0]) == 400
    assert detector.step == 400 and "to the end of the run" in detector.reason
    # the same sequence with the run going on is not (yet) a divergence
    going_on = DivergenceDetector(ratio=2.0, patience=500)
    assert feed(going_on, [1.0, 0.9, 0.8, 5.0], last_is_final=False) is None
    assert going_on.blowup_step == 400


def test_a_spike_that_recovers_at_the_last_check_counts_as_recovered():
    detector = DivergenceDetector(ratio=2.0, patience=500)
    assert feed(detector, [1.0, 3.0, 1.0]) is None and detector.spikes == 1


def test_an_absolute_limit_without_a_ratio():
    detector = DivergenceDetector(ratio=math.inf, limit=3.0, patience=1)
    # a 1000x rise from 0.001 is no blow-up here; above 3.0 is, and it recovers one step later
    assert feed(detector, [0.001, 1.0, 3.5, 2.0, 4.0, 4.0, 0.5], every=1) == 6
    assert detector.spikes == 1 and detector.last_spike_step == 3 and detector.step == 5
    assert "limit 3" in detector.reason


def test_its_state_survives_a_checkpoint_mid_blow_up():
    losses = [1.0, 0.8, 2.0, 2.5, 0.9, 3.0, 3.0, 3.0]
    whole = DivergenceDetector(ratio=2.0, patience=200)
    expected = feed(whole, losses)
    assert expected == 800 and whole.step == 600 and whole.spikes == 1
    first = DivergenceDetector(ratio=2.0, patience=200)
    assert feed(first, losses[:6], last_is_final=False) is None and first.blowup_step == 600  # open at the cut
    resumed = DivergenceDetector(ratio=2.0, patience=200)
    resumed.load_state_dict(first.state_dict())
    for i, loss in enumerate(losses[6:], start=7):
        if resumed.check(loss, i * 100, final=i == len(losses)):
            break
    assert (resumed.step, resumed.spikes, resumed.last_spike_step, resumed.reason) == (
        whole.step, whole.spikes, whole.last_spike_step, whole.reason)


def test_a_checkpoint_of_the_old_detector_loads_with_no_spike_and_no_blow_up():
    detector = DivergenceDetector(ratio=2.0, patience=100)
    detector.load_state_dict({"running_min": 1.0, "last_finite_loss": 1.2})
    assert detector.running_min == 1.0 and detector.spikes == 0 and detector.blowup_step is None
    assert detector.check(2.5, 100) is False and detector.check(2.5, 200) is True


def test_negative_patience_is_refused():
    with pytest.raises(ValueError, match="patience"):
        DivergenceDetector(patience=-1)


# ---------------------------------------------------------------- real runs with an injected spike
#
# The spike is added to the loss *value* the training loop sees (loss + f·loss.detach()), not to
# its gradient: the run trains exactly as without it, so a recovered spike must leave every other
# number of the run unchanged.

SPIKE = 10.0  # the loss the loop sees is 11x the true one: far above 2x its running minimum


class InjectedSpikes:
    """Counts training steps (calls with gradients on) and spikes the loss at the chosen ones.

    ``factors``: {1-based step: f} (unpacked) or {step: [f per member]} (packed, loss of shape (K,)).
    """

    def __init__(self, factors: dict):
        self.factors, self.steps = factors, 0

    def __call__(self, loss: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():  # evaluation passes
            return loss
        self.steps += 1
        factor = self.factors.get(self.steps)
        if factor is None:
            return loss
        return loss + torch.as_tensor(factor, dtype=loss.dtype, device=loss.device) * loss.detach()


def spiked_stacked_model(stacked_class, spikes: InjectedSpikes):
    """A ``StackedModel`` whose training calls (loss first in the output) go through ``spikes``."""

    class Spiked(stacked_class):
        def __call__(self, *inputs, **kwargs):
            out = super().__call__(*inputs, **kwargs)
            if kwargs.get("params") is not None:  # an EMA's evaluation
                return out
            return (spikes(out[0]), *out[1:]) if isinstance(out, tuple) else spikes(out)

    return Spiked


def spike_steps(first, last, factor=SPIKE):
    return {s: factor for s in range(first, last + 1)}


# LM: reports every 2 steps, a blow-up may last 2 steps
LM_SPIKY = {**NANO_LM, "steps": 12, "eval_every": 2, "divergence_patience": 2}


def spike_gpt(monkeypatch, spikes: InjectedSpikes):
    """The GPT's forward (and so the packed ``StackedGPT``'s, a subclass) with its loss through ``spikes``."""
    from trainables.models.gpt import GPT

    forward = GPT.forward

    def spiked_forward(self, *args, **kwargs):
        logits, loss = forward(self, *args, **kwargs)
        return logits, spikes(loss)

    monkeypatch.setattr(GPT, "forward", spiked_forward)


def lm_run(monkeypatch, factors, config=LM_SPIKY, restore=None):
    """``factors`` count the steps this call trains (after ``restore``'s step when resuming)."""
    from trainables.lm.train import run
    from trainables.models.gpt import GPT

    forward = GPT.forward
    spike_gpt(monkeypatch, InjectedSpikes(factors))
    session = BareSession(restore=restore)
    run(config, session)
    monkeypatch.setattr(GPT, "forward", forward)
    return session


def timeless(reports, skip=("tokens_per_s", "mfu", "samples_per_s")):
    return [{k: v for k, v in r.items() if k not in skip} for r in reports]


def test_lm_a_recovered_spike_is_counted_and_the_run_finishes_as_without_it(monkeypatch):
    plain = lm_run(monkeypatch, {})
    spiked = lm_run(monkeypatch, spike_steps(5, 6))  # the report at step 6 sees it, the one at 8 does not
    assert spiked.status == "finished" and [r["step"] for r in spiked.reports] == [2, 4, 6, 8, 10, 12]
    assert spiked.reports[2]["train_loss"] == pytest.approx(11 * plain.reports[2]["train_loss"], rel=1e-5)
    assert [r["loss_spikes"] for r in spiked.reports] == [0, 0, 0, 1, 1, 1]
    last = spiked.reports[-1]
    assert last["last_spike_step"] == 6 and last["last_spike_peak"] == spiked.reports[2]["train_loss"]
    assert "diverged_step" not in last
    # apart from the spike and its record, the same run
    drop = ("train_loss", "loss_spikes", "last_spike_step", "last_spike_peak")
    assert timeless(spiked.reports, drop + ("tokens_per_s",)) == timeless(plain.reports, drop + ("tokens_per_s",))


def test_lm_a_sustained_blow_up_diverges_at_its_start(monkeypatch):
    session = lm_run(monkeypatch, spike_steps(5, 12))  # above from the report at 6 on
    assert session.status == "diverged" and [r["step"] for r in session.reports] == [2, 4, 6, 8]
    assert session.reports[-1]["diverged_step"] == 6 and session.reports[-1]["loss_spikes"] == 0


def test_lm_a_resumed_run_keeps_an_open_blow_up(monkeypatch):
    # checkpoint at the report of step 6, inside the blow-up; resumed, it must still diverge at 8
    config = {**LM_SPIKY, "checkpoint_every": 1}
    whole = lm_run(monkeypatch, spike_steps(5, 12), config)
    state = next(s for s in whole.states if s["step"] == 6)
    assert state["detector"]["blowup_step"] == 6
    resumed = lm_run(monkeypatch, spike_steps(1, 6), config, restore=state)  # steps 7-12 of the run
    assert resumed.status == "diverged" and resumed.reports[-1]["diverged_step"] == 6
    assert timeless(resumed.reports) == timeless(whole.reports[3:])


def test_lm_packed_members_spike_and_diverge_each_by_its_own_detector(monkeypatch):
    import trainables.lm.packed as lm_packed

    # member 0: spike at steps 5-6 (recovers); member 1: above from step 5 on (diverges); member 2: none
    factors = {s: [SPIKE if s <= 6 else 0.0, SPIKE, 0.0] for s in range(5, 13)}
    spike_gpt(monkeypatch, InjectedSpikes(factors))
    configs = [{**LM_SPIKY, "lr": lr, "seed": seed} for lr, seed in ((6e-3, 0), (3e-3, 0), (1e-2, 1))]
    pack = BarePackSession(len(configs))
    lm_packed.run(configs, pack)
    recovered, diverged, plain = pack.members
    assert recovered.status == "finished" and recovered.reports[-1]["loss_spikes"] == 1
    assert recovered.reports[-1]["last_spike_step"] == 6
    assert diverged.status == "diverged" and diverged.reports[-1]["diverged_step"] == 6
    assert [r["step"] for r in diverged.reports] == [2, 4, 6, 8]
    assert plain.status == "finished" and plain.reports[-1]["loss_spikes"] == 0


# vision: 8 steps per epoch, an epoch mean above 5 nats starts a blow-up, which may last 1 epoch
def vision_config():
    from tests.test_vision import TINY

    return {**TINY, "epochs": 5, "decay_epoch": 4, "ema_decay": 0.0, "divergence_loss": 5.0,
            "divergence_patience": 1}


def vision_run(monkeypatch, factors, config=None, restore=None):
    import torch.nn.functional as F

    from trainables.vision.train import run

    spikes, cross_entropy = InjectedSpikes(factors), F.cross_entropy
    monkeypatch.setattr(F, "cross_entropy", lambda *a, **k: spikes(cross_entropy(*a, **k)))
    session = BareSession(restore=restore)
    run(config or vision_config(), session)
    monkeypatch.setattr(F, "cross_entropy", cross_entropy)
    return session


def test_vision_a_recovered_spike_is_counted_and_the_run_finishes_as_without_it(monkeypatch):
    plain = vision_run(monkeypatch, {})
    spiked = vision_run(monkeypatch, spike_steps(9, 16))  # all of epoch 2
    assert spiked.status == "finished" and len(spiked.reports) == 5
    assert [r["loss_spikes"] for r in spiked.reports] == [0, 0, 1, 1, 1]
    last = spiked.reports[-1]
    assert last["last_spike_step"] == 16 and last["last_spike_peak"] > 5.0 and "diverged_step" not in last
    drop = ("loss_spikes", "last_spike_step", "last_spike_peak", "samples_per_s")
    assert timeless(spiked.reports, drop) == timeless(plain.reports, drop)  # train_loss: a full eval pass


def test_vision_a_sustained_blow_up_diverges_at_the_end_of_its_first_epoch(monkeypatch):
    session = vision_run(monkeypatch, spike_steps(9, 40))  # epochs 2 to 5
    assert session.status == "diverged" and [r["epoch"] for r in session.reports] == [1, 2, 3]
    last = session.reports[-1]
    assert last["diverged_step"] == 16 and last["train_loss"] > 5.0 and last["loss_spikes"] == 0


def test_vision_a_resumed_run_keeps_an_open_blow_up(monkeypatch):
    config = {**vision_config(), "checkpoint_every": 1}
    whole = vision_run(monkeypatch, spike_steps(9, 40), config)
    state = next(s for s in whole.states if s["epoch"] == 2)  # taken inside the blow-up
    assert state["detector"]["blowup_step"] == 16
    resumed = vision_run(monkeypatch, spike_steps(1, 24), config, restore=state)  # epochs 3-5
    assert resumed.status == "diverged" and resumed.reports[-1]["diverged_step"] == 16
    assert timeless(resumed.reports) == timeless(whole.reports[2:])


def test_vision_a_blow_up_in_the_last_epoch_is_a_divergence(monkeypatch):
    session = vision_run(monkeypatch, spike_steps(33, 40), {**vision_config(), "divergence_patience": 3})
    assert session.status == "diverged" and session.reports[-1]["diverged_step"] == 40


def test_vision_packed_members_spike_and_diverge_each_by_its_own_detector(monkeypatch):
    import trainables.vision.packed as vision_packed

    # member 0: epoch 2 spiked (recovers); member 1: epochs 2-5 (diverges at epoch 3); member 2: none
    factors = {s: [SPIKE if s <= 16 else 0.0, SPIKE, 0.0] for s in range(9, 41)}
    monkeypatch.setattr(vision_packed, "StackedModel",
                        spiked_stacked_model(vision_packed.StackedModel, InjectedSpikes(factors)))
    configs = [{**vision_config(), "lr": lr, "seed": seed} for lr, seed in ((0.1, 0), (0.05, 0), (0.1, 1))]
    pack = BarePackSession(len(configs))
    vision_packed.run(configs, pack)
    recovered, diverged, plain = pack.members
    assert recovered.status == "finished" and [r["loss_spikes"] for r in recovered.reports] == [0, 0, 1, 1, 1]
    assert recovered.reports[-1]["last_spike_step"] == 16
    assert diverged.status == "diverged" and [r["epoch"] for r in diverged.reports] == [1, 2, 3]
    assert diverged.reports[-1]["diverged_step"] == 16
    assert plain.status == "finished" and plain.reports[-1]["loss_spikes"] == 0
