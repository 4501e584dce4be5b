"""Judge a chinchilla-tiny store with every report kept, then with only the reports that eval_every 400 gives.

    python docs/presets/results/rejudge-every-400.py /tmp/pA   # the design run of seeds 60-63
"""
import sys
from analysis.load import load_study, curves as make_curves
from analysis import verdicts as V
stores = sys.argv[1:]
import pandas as pd
frames = []
for st in stores:
    s = load_study("chinchilla-tiny", st)
    frames.append(s.curves() if hasattr(s, "curves") else make_curves(s.trials, s.metrics))
c = pd.concat(frames, ignore_index=True)
def show(c, label):
    print("==", label)
    for f in (V.chinchilla_midrun, V.chinchilla_end_of_cosine, V.chinchilla_after_tail, V.chinchilla_constant, V.train_val_alike):
        v = f(c)
        print(f"  {v.status:13s} {v.reason[:300]}")
show(c, "every report")
keep = (c["step"] % 400 == 0) | (c["step"] == c["config/steps"] + c["config/tail_steps"])
show(c[keep], "eval_every 400")
