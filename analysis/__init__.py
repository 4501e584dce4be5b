"""Reads the Parquet store of a study and turns it into DataFrames, figures and a report."""

from analysis.load import Study, load_study

__all__ = ["Study", "load_study"]
