"""The divergence detector on hand-made loss sequences: spikes that recover, blow-ups that stay, NaN."""

import math

import pytest

from trainables.divergence import DivergenceDetector


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
