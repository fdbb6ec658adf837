"""The one exception type users see.

Everything that is the caller's fault (bad value, missing file, corrupt checkpoint) raises
`NuwaError`; the CLI turns it into one line on stderr and exit status 2. Anything else is a
bug and keeps its traceback.
"""


class NuwaError(ValueError):
    """A user-facing error: the message names the bad value and what was expected."""
