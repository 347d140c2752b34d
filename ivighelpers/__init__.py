"""ivighelpers: statistics and data for the living meta-analysis of immunoglobulin in myositis.

Vocabulary follows R's metafor: ``escalc`` (effect sizes), ``rma`` (models), post-fit tools
(``leave_one_out``, ``influence``, ``egger``, ``rank_test``, ``trimfill``, ``cumulative``),
``rma_mh`` and ``rma_glmm``; ``bayesmeta`` (Bayesian normal-normal model by numerical
integration) and SWiM tools in ``swim``.
"""

from .diagnostics import cumulative, egger, influence, leave_one_out, rank_test, trimfill
from .effects import escalc, transform
from .errors import ConvergenceWarning, DataValidationError, InputError, ParameterError
from .meta import RMAResult, rma, rma_subgroups
from .models import rma_glmm, rma_mh
from .bayes import bayesmeta
from .swim import ipd_summary, romc_grid, stouffer, vote_count

__all__ = ["escalc", "transform", "rma", "rma_subgroups", "RMAResult", "rma_mh", "rma_glmm",
           "leave_one_out", "bayesmeta", "vote_count", "stouffer", "romc_grid", "ipd_summary", "influence", "egger", "rank_test", "trimfill", "cumulative",
           "InputError", "ParameterError", "DataValidationError", "ConvergenceWarning"]
__version__ = "0.1.0"
