"""Error types shared by the whole package.

`UserError` marks a mistake the user can fix (bad argument, missing file, wrong model): the CLI
prints its message as one line and exits with status 2, never a traceback.
"""


class CnnlabError(Exception):
    """Base class of cnnlab's own errors."""


class UserError(CnnlabError, ValueError):
    """A mistake in the user's input; the message says what was expected and what was given."""


class CorruptCheckpointError(UserError):
    """A checkpoint file is empty, truncated, bit-flipped or not a cnnlab checkpoint."""
