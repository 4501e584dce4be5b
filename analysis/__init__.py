"""Reads the Parquet store of a study and turns it into DataFrames, figures, verdicts and a report.

    from analysis import load_study, verdicts, figures
    study = load_study("ushape-tiny", "studies")
    finals, curves = study.finals(), study.curves()      # one row per trial / per report
    verdicts.ushape(finals)                                # Verdict(status="pass", reason=..., numbers=...)
    figures.ushape(finals, "test_error").savefig("ushape.png")
"""

from analysis.load import (Study, aggregate_seeds, curves, finals, load_study, seed_mean_curves, select,
                           type_config)
from analysis.report import build_report, write_report
from analysis.verdicts import Verdict

__all__ = ["Study", "Verdict", "aggregate_seeds", "build_report", "curves", "finals", "load_study",
           "seed_mean_curves", "select", "type_config", "write_report"]
