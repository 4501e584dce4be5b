"""Contract tests of study/internals.py: every non-public Ray Tune / Optuna attribute we use, by name.

When an upgrade drops or renames one of these, the test naming it fails here (and the
accessor raises ``InternalsChanged``), instead of a resumed study silently losing its
callbacks, searcher or scheduler history.
"""

import optuna
import pytest
from ray import tune
from ray.tune.schedulers import AsyncHyperBandScheduler, MedianStoppingRule, TrialScheduler
from ray.tune.search.optuna import OptunaSearch

from study import internals


@pytest.mark.parametrize("owner,attribute", [
    (OptunaSearch, "_ot_study"), (OptunaSearch, "_ot_trials"), (OptunaSearch, "_completed_trials"),
])
def test_optuna_search_keeps_its_study_trials_and_told_set(owner, attribute):
    search = OptunaSearch({"x": optuna.distributions.FloatDistribution(0, 1)}, metric="loss", mode="min")
    assert hasattr(search, attribute), f"ray.tune.search.optuna.OptunaSearch.{attribute} is gone"


def test_optuna_search_accessors_reach_the_live_study():
    search = OptunaSearch({"x": optuna.distributions.FloatDistribution(0, 1)}, metric="loss", mode="min", seed=0)
    config = search.suggest("trial-a")
    study = internals.optuna_study(search)
    assert isinstance(study, optuna.Study) and len(study.trials) == 1
    trial = internals.optuna_trials(search)["trial-a"]
    assert trial.params["x"] == config["x"]
    internals.mark_completed(search, "trial-a")
    assert "trial-a" in search._completed_trials


def test_frozen_trial_keeps_its_storage_id_and_a_handle_tells_the_trial():
    study = optuna.create_study()
    study.ask()
    frozen = study.get_trials(deepcopy=False)[0]
    assert hasattr(frozen, "_trial_id"), "optuna.trial.FrozenTrial._trial_id is gone"
    handle = internals.trial_by_number(study, 0)
    handle.set_user_attr("lost", "yes")
    study.tell(handle, state=optuna.trial.TrialState.FAIL)
    assert study.trials[0].user_attrs == {"lost": "yes"} and study.trials[0].state.name == "FAIL"


class _Trial:
    def __init__(self, trial_id):
        self.trial_id, self.config = trial_id, {}

    def __hash__(self):
        return hash(self.trial_id)

    def __eq__(self, other):
        return getattr(other, "trial_id", None) == self.trial_id


def test_asha_history_replays_and_then_stops_a_worse_trial():
    asha = AsyncHyperBandScheduler(time_attr="step", metric="loss", mode="min", grace_period=1, reduction_factor=2,
                                   max_t=4)
    for name in ("_trial_info", "_brackets", "_metric_op", "_time_attr"):
        assert hasattr(asha, name), f"ray.tune.schedulers.AsyncHyperBandScheduler.{name} is gone"
    assert internals.scheduler_time_attr(asha) == "step"
    for i, loss in enumerate((1.0, 1.1, 1.2, 1.3)):
        internals.replay_asha(asha, _Trial(f"stored-{i}"), [{"step": 1, "loss": loss}], "loss")
    new = _Trial("new")
    assert not internals.asha_knows(asha, "new")
    asha.on_trial_add(None, new)
    assert internals.asha_knows(asha, "new")
    # the replayed rung at step 1 holds 1.0…1.3: a trial at 5.0 is cut, one at 0.5 continues
    assert asha.on_trial_result(None, new, {"step": 1, "loss": 5.0}) == TrialScheduler.STOP
    better = _Trial("better")
    asha.on_trial_add(None, better)
    assert asha.on_trial_result(None, better, {"step": 1, "loss": 0.5}) == TrialScheduler.CONTINUE


def test_median_rule_keeps_its_results_per_trial():
    median = MedianStoppingRule(time_attr="step", metric="loss", mode="min", grace_period=1, min_samples_required=1)
    assert hasattr(median, "_results"), "ray.tune.schedulers.MedianStoppingRule._results is gone"
    stub = _Trial("stored")
    internals.replay_median(median, stub, [{"step": 1, "loss": 1.0}])
    assert median._results[stub] == [{"step": 1, "loss": 1.0}]


def test_schedulers_keep_the_buffered_results_flag():
    class Mine(TrialScheduler):
        pass

    scheduler = Mine()
    internals.unbuffered(scheduler)
    assert scheduler._supports_buffered_results is False


def test_a_restored_tuner_takes_new_callbacks_and_search(tmp_path):
    def trainable(config):
        tune.report({"loss": config["x"]})

    tuner = tune.Tuner(trainable, param_space={"x": 1.0}, tune_config=tune.TuneConfig(num_samples=1),
                       run_config=tune.RunConfig(storage_path=str(tmp_path), name="t"))
    assert not internals.is_remote_tuner(tuner)
    callback = tune.Callback()
    internals.replace_callbacks(tuner, [callback])
    assert tuner._local_tuner.get_run_config().callbacks == [callback]
    scheduler = AsyncHyperBandScheduler(time_attr="step", metric="loss", mode="min")
    internals.replace_search(tuner, {"scheduler": scheduler})
    assert tuner._local_tuner._tune_config.scheduler is scheduler


def test_a_missing_attribute_is_one_loud_error():
    with pytest.raises(internals.InternalsChanged, match=r"has no attribute '_ot_study'.*not supported"):
        internals.optuna_study(object())
