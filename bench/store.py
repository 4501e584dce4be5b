"""Store benchmark: 1,000 trials x 1,000 reports (1M metric rows) through the study's callback path.

    python bench/store.py                       # the recorded run (a few minutes)
    python bench/store.py --trials 100 --reports 100   # a quick look

Synthetic Ray Tune results (the keys Ray adds, a dozen metrics, the last one with the
trial's status) go through ``StoreCallback`` into ``StoreWriter`` exactly as a study's
driver feeds them (no Ray needed): ``--concurrent`` trials run at a time and report in
turn, a new one starting as one ends. Then, each in its own fresh process (so that its
peak memory is its own): the whole store read with pandas (``StudyStore.read_metrics``),
one trial's metrics (``read_metrics(trial_id)``), and a DuckDB query that filters the
metrics by one config value (a join with ``trials.parquet``). Reported: rows/s written,
the write time of every 100k rows (flat = linear: nothing written is rewritten), the time
spent writing the trials table (update files, merged as they pile up, then
``trials.parquet`` once) and part files, ``read_trials`` while the study runs, read times
(median of ``--repeats`` interleaved runs) and peak resident memory of each process
(ru_maxrss, with an import-only process as the baseline). The baseline runs in the same
command, interleaved with ours: the same writes with ``trials.parquet`` rewritten whole at
every flush (the writer before incremental writes).

    python bench/store.py --trials 10000 --reports 100 --no-baseline   # 10,000 trials (1M rows)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from _common import Record, median, peak_rss_mib, say, table

STUDY = "bench-store"
METRICS = ("step", "tokens", "lr", "train_loss", "val_loss", "ema_val_loss", "weight_norm", "grad_norm",
           "update_norm", "effective_lr", "tokens_per_s")


class FakeTrial:
    """What StoreCallback reads of a Ray Tune trial."""

    def __init__(self, trial_id: str, config: dict):
        self.trial_id, self.config = trial_id, config
        self.status, self.last_result, self.error_file = "RUNNING", {}, None


def trial_config(index: int) -> dict:
    # 10 LRs x 10 WDs x 10 seeds = 1,000 grid points
    lrs = [1e-4 * 2 ** i for i in range(10)]
    return {"model": "gpt-tiny", "steps": 1000, "lr": lrs[index // 100 % 10], "weight_decay": (index // 10 % 10) / 10,
            "seed": index % 10, "schedule": "cosine"}


def whole_table_writer():
    """The baseline: the writer as it was before incremental trial writes, rewriting
    ``trials.parquet`` whole at every flush, checkpoint and trial end."""
    from study.store import StoreWriter

    class WholeTableWriter(StoreWriter):
        def _write_trials(self) -> None:  # every change: the whole table, as close writes it
            if self.dirty:
                self.dirty.clear()
                self.whole_written = False
                self._write_whole_table()

    return WholeTableWriter


def write_phase(root: str, trials: int, reports: int, concurrent: int, checkpoint_every: int,
                writer_kind: str = "incremental") -> dict:
    import numpy as np

    from study.callbacks import StoreCallback
    from study.provenance import provenance
    from study.store import StoreWriter, StudyStore
    from trainables.session import STATUS_KEY

    store = StudyStore(root, STUDY)
    store.write_text("spec.yaml", "name: bench-store\ntrainable: lm\naxes: {seed: [0]}\n")
    writer = (StoreWriter if writer_kind == "incremental" else whole_table_writer())(store, provenance())
    # count and time the two kinds of file the writer writes
    spent = {"trials_writes": 0, "trials_s": 0.0, "part_writes": 0, "part_s": 0.0}

    def timed(method, kind):
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return method(*args, **kwargs)
            finally:
                spent[f"{kind}_writes"] += 1
                spent[f"{kind}_s"] += time.perf_counter() - t
        return wrapper

    store.write_trials = timed(store.write_trials, "trials")  # the trials table, whole or as updates
    store.write_trial_update = timed(store.write_trial_update, "trials")
    store.write_metrics_part = timed(store.write_metrics_part, "part")
    callback = StoreCallback(writer)
    rng = np.random.default_rng(0)

    pending = [FakeTrial(f"bench_{i:05d}", trial_config(i)) for i in range(trials)]
    pending.reverse()
    running: list[tuple[FakeTrial, np.ndarray]] = []
    done_reports: dict[str, int] = {}
    total = trials * reports
    block = max(1, total // 10)
    marks, rows = [], 0
    start = time.perf_counter()
    last_mark, last_spent = start, (0.0, 0.0)
    iteration = 0
    while pending or running:
        while pending and len(running) < concurrent:
            trial = pending.pop()
            callback.on_trial_start(iteration, [], trial)
            running.append((trial, rng.random((reports, len(METRICS)))))
            done_reports[trial.trial_id] = 0
        for trial, values in list(running):
            n = done_reports[trial.trial_id] + 1
            done_reports[trial.trial_id] = n
            result = dict(zip(METRICS, values[n - 1].tolist()))
            result.update(step=n * 10, training_iteration=n, time_total_s=n * 0.5, time_this_iter_s=0.5,
                          iterations_since_restore=n, done=False, trial_id=trial.trial_id, pid=1234,
                          hostname="bench", node_ip="127.0.0.1", node_id="node", gpu_ids="", cpus=1.0, gpus=0.0,
                          timestamp=int(time.time()), config=trial.config)
            if n == reports:
                result[STATUS_KEY] = "finished"
            callback.on_trial_result(iteration, [], trial, result)
            if checkpoint_every and n % checkpoint_every == 0:
                callback.on_checkpoint(iteration, [], trial, None)
            rows += 1
            if rows % block == 0:
                now = time.perf_counter()
                marks.append({"rows": rows, "block_s": now - last_mark, "trials_s": spent["trials_s"] - last_spent[0],
                              "part_s": spent["part_s"] - last_spent[1], "trials_running": len(running),
                              "trials_stored": len(writer.trials)})
                last_mark, last_spent = now, (spent["trials_s"], spent["part_s"])
            if n == reports:
                trial.status, trial.last_result = "TERMINATED", {**result, "done": True}
                callback.on_trial_complete(iteration, [], trial)
                running.remove((trial, values))
        iteration += 1
        callback.on_step_end(iteration, [])
    # what `study status` reads while a study runs: trials.parquet and the update files over it
    read_start = time.perf_counter()
    mid_run_trials = len(store.read_trials())
    mid_run_read_s = time.perf_counter() - read_start
    update_files = len(store.trial_update_files())
    callback.on_experiment_end([])
    seconds = time.perf_counter() - start - mid_run_read_s
    files = len(store.metric_files())
    return {"rows": rows, "seconds": seconds, "rows_per_s": rows / seconds, "blocks": marks, "part_files": files,
            **spent, "read_trials_mid_run_s": mid_run_read_s, "mid_run_trials": mid_run_trials,
            "mid_run_update_files": update_files, "writer": writer_kind, "peak_rss_mib": peak_rss_mib()}


def read_phase(root: str, what: str) -> dict:
    from study.store import StudyStore

    store = StudyStore(root, STUDY)
    start = time.perf_counter()
    if what == "read_all":
        frame = store.read_metrics()
        out = {"rows": len(frame), "columns": frame.shape[1]}
    elif what == "read_one":
        trial_id = f"bench_{len(store.read_trials()) // 2:05d}"
        start = time.perf_counter()  # the trials table read above is not part of it
        frame = store.read_metrics(trial_id)
        out = {"rows": len(frame), "trial_id": trial_id}
    elif what == "duckdb":
        import duckdb

        metrics = os.path.join(store.root, "metrics", "*", "*.parquet")
        trials = os.path.join(store.root, "trials.parquet")
        value = trial_config(0)["lr"]
        rows = duckdb.sql(f"""
            select count(*) as n, avg(m.train_loss) as mean_loss
            from read_parquet('{metrics}', hive_partitioning = true, union_by_name = true) m
            join read_parquet('{trials}') t using (trial_id)
            where t."config/lr" = {value}""").fetchall()
        out = {"rows": rows[0][0], "filter": f"config/lr = {value}"}
    elif what == "baseline":
        import duckdb  # noqa: F401  (the imports the other phases pay for)
        import pandas  # noqa: F401
        out = {}
    else:
        raise ValueError(what)
    out["seconds"] = time.perf_counter() - start
    out["peak_rss_mib"] = peak_rss_mib()
    return out


def in_subprocess(*args: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--phase", *args], capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"phase {args} failed:\n{out.stderr}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=1000)
    parser.add_argument("--reports", type=int, default=1000)
    parser.add_argument("--concurrent", type=int, default=16, help="trials reporting at the same time")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="reports between a trial's checkpoints (0: none)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="interleaved repetitions of the writes (ours and the baseline's) and of the reads")
    parser.add_argument("--no-baseline", dest="baseline", action="store_false",
                        help="skip the whole-table baseline (its cost grows with trials x flushes: "
                             "hours at 10,000 trials)")
    parser.add_argument("--dir", help="store root (default: a temporary folder, removed after)")
    parser.add_argument("--out", help="JSON path (default: bench/results/store.json)")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:
        what, root, *rest = args.phase
        result = write_phase(root, *map(int, rest[:4]), *rest[4:]) if what == "write" else read_phase(root, what)
        print(json.dumps(result))
        return

    record = Record("store", {k: v for k, v in vars(args).items() if k != "phase"})
    root = args.dir or tempfile.mkdtemp(prefix="bench-store-")
    try:
        say(f"writing {args.trials} trials x {args.reports} reports ({args.concurrent} at a time) into {root}, "
            f"{args.repeats} times with the incremental writer"
            + (" and the whole-table baseline, interleaved" if args.baseline else " (no baseline)"))
        writes = {"incremental": [], "whole": []} if args.baseline else {"incremental": []}
        for repeat in range(args.repeats):
            for kind in writes:
                where = os.path.join(root, f"{kind}-{repeat}")
                writes[kind].append(in_subprocess("write", where, str(args.trials), str(args.reports),
                                                  str(args.concurrent), str(args.checkpoint_every), kind))
                say(f"  repeat {repeat}, {kind} trials table: {writes[kind][-1]['seconds']:.1f} s "
                    f"({writes[kind][-1]['trials_s']:.1f} s of it writing the trials table)")
                if (kind, repeat) != ("incremental", 0):  # the reads below use the first incremental store
                    shutil.rmtree(where, ignore_errors=True)
        root = os.path.join(root, "incremental-0")
        write = writes["incremental"][0]
        blocks = write.pop("blocks")
        baseline_blocks = writes["whole"][0].pop("blocks") if args.baseline else None
        if args.baseline:
            say("the baseline (trials.parquet rewritten whole), first repeat:")
            say(table([{"rows written": b["rows"], "s for these rows": b["block_s"],
                        "of it: trials.parquet rewrites": b["trials_s"], "trials in the table": b["trials_stored"]}
                       for b in baseline_blocks]))
        say("ours (incremental), first repeat:")
        say(table([{"rows written": b["rows"], "s for these rows": b["block_s"],
                    "of it: trials table": b["trials_s"], "part files": b["part_s"],
                    "the rest (callback, buffers)": b["block_s"] - b["trials_s"] - b["part_s"],
                    "trials in the table": b["trials_stored"]} for b in blocks]))
        reads = {what: [] for what in ("baseline", "read_all", "read_one", "duckdb")}
        for _ in range(args.repeats):
            for what in reads:
                reads[what].append(in_subprocess(what, root))
        size = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root) for f in fs)
    finally:
        if not args.dir:
            shutil.rmtree(os.path.dirname(root) if root.endswith("incremental-0") else root, ignore_errors=True)

    base_rss = median(r["peak_rss_mib"] for r in reads["baseline"])
    summary = {
        "rows": write["rows"], "write_s": write["seconds"], "rows_per_s": write["rows_per_s"],
        "part_files": write["part_files"], "store_mib": size / 2**20,
        "trials_parquet_writes": write["trials_writes"], "trials_parquet_s": write["trials_s"],
        "part_writes": write["part_writes"], "part_write_s": write["part_s"],
        "write_blocks": blocks,
        "write_block_ratio_last_first": blocks[-1]["block_s"] / blocks[0]["block_s"],
        "trials_table_block_ratio_last_first": blocks[-1]["trials_s"] / blocks[0]["trials_s"] if blocks[0]["trials_s"]
        else float("nan"),  # a tiny run may write no trials table in its first 10 %
        "read_trials_mid_run_s": write["read_trials_mid_run_s"], "mid_run_update_files": write["mid_run_update_files"],
        "writers": {kind: {"write_s": median(r["seconds"] for r in runs),
                           "write_s_min_max": [min(r["seconds"] for r in runs), max(r["seconds"] for r in runs)],
                           "trials_table_s": median(r["trials_s"] for r in runs),
                           "trials_table_s_min_max": [min(r["trials_s"] for r in runs), max(r["trials_s"] for r in runs)],
                           "trials_table_writes": runs[0]["trials_writes"],
                           "read_trials_mid_run_s": median(r["read_trials_mid_run_s"] for r in runs),
                           "repeats": len(runs)} for kind, runs in writes.items()},
        "baseline_blocks": baseline_blocks,
        "trials_table_speedup": median(b["trials_s"] for b in writes["whole"]) / median(r["trials_s"] for r in writes["incremental"])
        if args.baseline else None,
        "write_peak_rss_mib": write["peak_rss_mib"], "baseline_rss_mib": base_rss,
    }
    for what in ("read_all", "read_one", "duckdb"):
        summary[f"{what}_s"] = median(r["seconds"] for r in reads[what])
        summary[f"{what}_s_all"] = [r["seconds"] for r in reads[what]]
        summary[f"{what}_rows"] = reads[what][0]["rows"]
        summary[f"{what}_peak_rss_mib"] = median(r["peak_rss_mib"] for r in reads[what])
    record["summary"] = summary
    rows = [
        {"what": f"write {write['rows']:,} rows", "seconds": write["seconds"], "rows/s": write["rows_per_s"],
         "peak RSS MiB": write["peak_rss_mib"]},
        {"what": f"read whole store (pandas, {summary['read_all_rows']:,} rows)", "seconds": summary["read_all_s"],
         "peak RSS MiB": summary["read_all_peak_rss_mib"]},
        {"what": f"read one trial ({summary['read_one_rows']:,} rows)", "seconds": summary["read_one_s"],
         "peak RSS MiB": summary["read_one_peak_rss_mib"]},
        {"what": f"DuckDB: metrics where config/lr = x ({summary['duckdb_rows']:,} rows)",
         "seconds": summary["duckdb_s"], "peak RSS MiB": summary["duckdb_peak_rss_mib"]},
        {"what": "import-only process (baseline)", "peak RSS MiB": base_rss},
    ]
    say(table(rows))
    say(f"{write['part_files']} part files, {size / 2**20:.1f} MiB; trials table written {write['trials_writes']} "
        f"times ({write['trials_s']:.1f} s), part files {write['part_writes']} times ({write['part_s']:.1f} s); "
        f"last/first 10% block time {summary['write_block_ratio_last_first']:.2f}, of the trials table "
        f"{summary['trials_table_block_ratio_last_first']:.2f}")
    say(table([{"trials table": kind, "write s (median)": w["write_s"],
                "write s (min-max)": f"{w['write_s_min_max'][0]:.1f}-{w['write_s_min_max'][1]:.1f}",
                "of it: trials table s": w["trials_table_s"],
                "trials table s (min-max)": f"{w['trials_table_s_min_max'][0]:.1f}-{w['trials_table_s_min_max'][1]:.1f}",
                "read_trials mid-run s": w["read_trials_mid_run_s"], "repeats": w["repeats"]}
               for kind, w in summary["writers"].items()]))
    say(f"wrote {record.write(args.out)}")


if __name__ == "__main__":
    main()
