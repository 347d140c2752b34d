"""ivighelpers: statistics and data for the living meta-analysis of immunoglobulin in myositis.

Vocabulary follows R's metafor: ``escalc`` (effect sizes), ``rma`` (models), post-fit tools
(``leave_one_out``, ``influence``, ``egger``, ``rank_test``, ``trimfill``, ``cumulative``),
``rma_mh`` and ``rma_glmm``; ``bayesmeta`` (Bayesian normal-normal model by numerical
integration) and SWiM tools in ``swim``.

The names below are imported when first used (PEP 562), so ``python -m ivighelpers run ...`` can hand its request
to a warm process (``ivighelpers.server``) without first importing pandas and scipy.
"""

import importlib

_WHERE = {  # public name -> submodule
    **dict.fromkeys(("cumulative", "egger", "influence", "leave_one_out", "rank_test", "trimfill"), "diagnostics"),
    **dict.fromkeys(("escalc", "transform"), "effects"),
    **dict.fromkeys(("ConvergenceWarning", "DataValidationError", "InputError", "ParameterError"), "errors"),
    **dict.fromkeys(("RMAResult", "rma", "rma_subgroups"), "meta"),
    **dict.fromkeys(("rma_glmm", "rma_mh"), "models"),
    "bayesmeta": "bayes",
    **dict.fromkeys(("ipd_summary", "romc_grid", "stouffer", "vote_count"), "swim"),
}

__all__ = ["escalc", "transform", "rma", "rma_subgroups", "RMAResult", "rma_mh", "rma_glmm",
           "leave_one_out", "bayesmeta", "vote_count", "stouffer", "romc_grid", "ipd_summary", "influence", "egger",
           "rank_test", "trimfill", "cumulative",
           "InputError", "ParameterError", "DataValidationError", "ConvergenceWarning"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in _WHERE:
        value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(__all__))
