import sys, time, torch, json
sys.path.insert(0, ".")
torch.set_num_threads(1)
from trainables.session import BareSession
from trainables.vision.train import run
base = {"schedule": "step", "model": __import__("os").environ.get("MODEL", "cnn1d"), "train_samples": 4000, "test_samples": 4000, "batch_size": 128, "eval_batch_size": 2000,
        "epochs": 50, "decay_epoch": 40, "momentum": 0.0, "train_eval": "running", "eval_every": 5,
        "ema_decay": 0.0, "hessian_every": 0, "threads": 1}
for spec in sys.argv[1:]:
    over = dict(kv.split("=") for kv in spec.split(","))
    over = {k: (float(v) if k in ("lr", "weight_decay", "decay_lr") else int(v)) for k, v in over.items()}
    s = BareSession(); t = time.perf_counter()
    run({**base, **over}, s)
    print(spec, s.status, f"{time.perf_counter()-t:.0f}s", " ".join(f"{r['epoch']}:{100*r.get('train_error',0):.1f}/{100*r.get('test_error',0):.1f}/{r.get('weight_norm',0):.0f}" for r in s.reports), flush=True)
