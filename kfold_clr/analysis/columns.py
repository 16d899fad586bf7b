"""Reading the columns of a saved ``folds.csv`` as the tables, costs and figures all need them:
booleans as written to CSV, and the strategies in display order."""

from typing import Optional

import pandas as pd


def as_bool(series: pd.Series) -> pd.Series:
    """A column of booleans read from CSV ("True", "false", 1, NaN) as a bool Series; NaN is False."""
    if series.dtype == bool:
        return series
    text = series.astype("string").str.strip().str.lower()
    return text.isin(["true", "1", "1.0", "yes"]).fillna(False).astype(bool)


def strategy_order(folds_df: pd.DataFrame, strategies: Optional[list] = None) -> list:
    """Strategies in display order: ``strategies`` first (those present), then any others in order of appearance."""
    present = list(pd.unique(folds_df["strategy"].astype(str)))
    ordered = [name for name in (strategies or []) if name in present]
    return ordered + [name for name in present if name not in ordered]
