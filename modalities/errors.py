"""Errors raised on bad input; they name the file, row or key and the reason."""


class DataError(ValueError):
    """A sample could not be read or is unusable. The message says which one and why."""

