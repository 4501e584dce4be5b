"""The two chinchilla-tiny confirmations' speed, from their stores: tokens/s and trial seconds per
schedule, and the shipped preset's wall time re-estimated at the slower run's speed.

    python docs/presets/results/confirmation-speed.py /tmp/ct-final2 /tmp/ct-final3 > confirmation-speed.json

The first store is the slower run (seeds 80-84, constant arms of 1,600 steps: 20 min 1 s), the
second the shipped preset's (seeds 80-87: 13 min 17 s); the cosine arms are the same work in both.
"""
import json
import sys

import pandas as pd

FIXED_S = 35  # Ray's start and the report in the slower run: its wall time minus its trials' span


def summary(storage: str) -> dict:
    t = pd.read_parquet(f"{storage}/chinchilla-tiny/trials.parquet")
    span = (pd.to_datetime(t["ended_at"]).max() - pd.to_datetime(t["started_at"]).min()).total_seconds()
    out = {"trials_span_s": round(span, 1)}
    for schedule, g in t.groupby("config/schedule"):
        out[schedule] = {"trials": len(g), "tokens_per_s_median": round(float(g["tokens_per_s"].median())),
                         "trial_s_min": round(float(g["time_total_s"].min()), 1),
                         "trial_s_max": round(float(g["time_total_s"].max()), 1),
                         "trial_s_sum": round(float(g["time_total_s"].sum()), 1)}
    return out


slow, shipped = (summary(s) for s in sys.argv[1:3])
scaled = slow["cosine"]["trial_s_sum"] + shipped["constant"]["trial_s_sum"] * (
    shipped["constant"]["tokens_per_s_median"] / slow["constant"]["tokens_per_s_median"])
print(json.dumps({"slower run": slow, "shipped preset": shipped,
                  "shipped preset at the slower run's speed": {
                      "trial_s_sum": round(scaled), "two at a time plus start and report, min":
                      round((scaled / 2 + FIXED_S) / 60, 1)}}, indent=1))
