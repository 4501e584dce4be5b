"""Ray workers import torch and the trainables when they start (the setup hook), not in a trial."""

from __future__ import annotations

import importlib
import subprocess
import sys
import uuid

from study.launch import PRELOAD_HOOK, worker_runtime_env
from trainables import PACKED, TRAINABLES

# the built-in trainables' training code (tests and examples register trainables of their own, which
# a fresh worker knows nothing of)
TRAINING_MODULES = sorted({info.run.partition(":")[0] for info in [*TRAINABLES.values(), *PACKED.values()]
                           if info.run.startswith("trainables.")})


def test_the_hook_names_a_function_that_imports_torch_and_every_trainable():
    assert worker_runtime_env() == {"worker_process_setup_hook": PRELOAD_HOOK}
    module, _, function = PRELOAD_HOOK.rpartition(".")
    assert callable(getattr(importlib.import_module(module), function))
    code = (f"import importlib, sys; m, f = {PRELOAD_HOOK!r}.rsplit('.', 1); "
            f"assert 'torch' not in sys.modules; getattr(importlib.import_module(m), f)(); "
            f"print(sorted(x for x in ['torch', *{TRAINING_MODULES!r}] if x not in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert {"trainables.lm.train", "trainables.vision.train", "trainables.lm.packed"} <= set(TRAINING_MODULES)


def test_a_fresh_ray_worker_has_them_imported_before_its_first_task(ray_session):
    ray = ray_session

    @ray.remote(num_cpus=0)
    def imported_at_start() -> list[str]:
        return sorted(name for name in ["torch", *TRAINING_MODULES] if name in sys.modules)

    # an env var of its own puts the task on a new worker, started for it
    fresh = imported_at_start.options(runtime_env={"env_vars": {"WD_STUDY_TEST_WORKER": uuid.uuid4().hex}})
    assert ray.get(fresh.remote(), timeout=120) == sorted(["torch", *TRAINING_MODULES])
