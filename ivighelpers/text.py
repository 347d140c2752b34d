"""Wording shared by the reports: one formatter per quantity, so a number reads the same in every table and sentence."""


import pandas as pd

NA = "not reported"


def count_text(x) -> str:
    """A count as an integer, or 'not reported' when missing."""
    return NA if x is None or pd.isna(x) else f"{int(x)}"


def p_text(p: float) -> str:
    """'p < 0.001' or 'p = 0.016' (three decimals everywhere; never 'p = < 0.001')."""
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
