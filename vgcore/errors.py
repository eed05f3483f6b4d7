"""The one base class of errors a user can fix (bad input, missing data or weights, a diverged run).

The command line prints such an error as its message alone, with exit code 2 (the traceback only
with ``--debug``); the library raises them like any exception. Each concrete error also derives from
the built-in class a caller would expect (``ValueError``, ``FileNotFoundError``, ...).
"""


class UserError(Exception):
    """An error whose message says what is wrong and how to fix it."""
