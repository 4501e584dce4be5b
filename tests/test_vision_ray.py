"""The vision trainable through Ray Tune into the Parquet store (one small grid)."""

import io

from study import launch, parse_spec
from tests.test_vision import CONTRACT, TINY


def test_vision_grid_through_ray_to_the_store(ray_session, storage):
    config = {k: v for k, v in TINY.items() if k != "weight_decay"}
    config.update({"epochs": 2, "decay_epoch": 1, "hessian_every": 1, "finetune_every": 2, "checkpoint_every": 1})
    spec = parse_spec({"name": "vision-e2e", "trainable": "vision", "config": config,
                       "axes": {"weight_decay": [0.0, 1e-3]}, "resources": {"cpu": 1}})
    result = launch(spec, storage=storage, stream=io.StringIO())

    trials = result.trials()
    assert sorted(trials["status"]) == ["finished", "finished"]
    assert sorted(trials["config/weight_decay"]) == [0.0, 1e-3]
    assert (trials["config/model"] == "cnn1d-si").all()
    metrics = result.metrics()
    assert metrics.groupby("trial_id")["epoch"].apply(list).tolist() == [[1, 2]] * 2
    assert CONTRACT | {f"weight_norm/convs.{i}" for i in range(4)} <= set(metrics.columns)
    assert CONTRACT <= set(trials.columns)
    last = metrics[metrics["epoch"] == 2]
    assert last[sorted(CONTRACT)].notna().all().all()
    assert metrics["test_error"].between(0, 1).all()
    # the two weight decays trained differently from the same initialisation
    assert last["weight_norm"].nunique() == 2
