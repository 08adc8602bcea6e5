"""Errors a user can act on: the CLI prints them without a traceback and exits non-zero."""


class PhotoscoreError(Exception):
    """A failure with a message that names the thing at fault and what to do about it."""
