"""The one exception type a user can cause; the CLI prints it as a single line, never a traceback."""


class MmgbmError(Exception):
    """A problem with the user's input, config or files, phrased as what is wrong and how to fix it."""
