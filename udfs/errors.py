"""Errors a user can act on: the CLI prints them without a traceback and exits non-zero."""


class PhotoscoreError(Exception):
    """A failure with a message that names the thing at fault and what to do about it."""


class TransientReadError(PhotoscoreError):
    """A photo that could not be read because its store is unreachable, slow or overloaded right
    now. Retried, then failed loudly (the Spark task fails, the stream restarts from its checkpoint);
    never quarantined, since a quarantined content is never decoded again."""
