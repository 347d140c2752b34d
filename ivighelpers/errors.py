"""Exceptions raised by ivighelpers.

Every error about bad input is a subclass of ``ValueError`` and its message names the argument
(or file, row and column) and what is allowed, so a notebook user can fix the call without
reading the code.
"""


class InputError(ValueError):
    """Bad argument to a statistical function (names the argument and what is allowed)."""


class ParameterError(InputError):
    """Bad notebook or command-line parameter (names the parameter and the allowed values)."""


class DataValidationError(InputError):
    """A data file breaks the schema; the message names file, row and column."""


class ConvergenceWarning(UserWarning):
    """An iterative estimator did not converge and a stated fallback was used."""


class MissingValueWarning(UserWarning):
    """An effect size is missing (e.g. a zero cell with ``to="none"``) and the study is left out, as metafor does."""
