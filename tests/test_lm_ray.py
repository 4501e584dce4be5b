"""One LM study through Ray Tune into the store: a blown-up trial ends `diverged`, the study goes on."""

import math

from study import launch, parse_spec
from tests.conftest import NANO_LM
from trainables import get_trainable


def test_divergent_trial_is_a_result_and_the_study_continues(ray_session, storage):
    spec = parse_spec({
        "name": "lm-diverge", "trainable": "lm",
        # patience 0: the blow-up ends the trial at its first report (patience: tests/test_divergence.py)
        "config": {**NANO_LM, "steps": 8, "grad_clip": 0.0, "weight_decay": 0.1, "divergence_patience": 0},
        "axes": {"lr": [3e-3, 1000.0]},
        "resources": {"cpu": 1},
    })
    result = launch(spec, storage=storage, progress=False)

    trials = result.trials().set_index("config/lr")
    assert trials.loc[3e-3, "status"] == "finished"
    assert trials.loc[1000.0, "status"] == "diverged"
    assert 0 < trials.loc[1000.0, "diverged_step"] < 8
    assert math.isfinite(trials.loc[1000.0, "last_finite_loss"])
    assert math.isnan(trials.loc[3e-3, "diverged_step"])

    metrics = result.metrics()
    finished = metrics[metrics["trial_id"] == trials.loc[3e-3, "trial_id"]]
    assert finished["step"].tolist() == [2, 4, 6, 8]
    # the store holds every metric the trainable declares (mfu only on a GPU)
    for name in set(get_trainable("lm").metrics) - {"mfu", "diverged_step", "last_finite_loss", "last_spike_step",
                                                    "last_spike_peak"}:  # the last two: only after a spike
        assert finished[name].notna().all(), name
    assert (finished["loss_spikes"] == 0).all()
    diverged = metrics[metrics["trial_id"] == trials.loc[1000.0, "trial_id"]]
    assert diverged["step"].max() == trials.loc[1000.0, "diverged_step"] < 8
