"""The one exception type a user can cause; the CLI prints it as a single line, never a traceback."""


class MmgbmError(Exception):
    """A problem with the user's input, config or files, phrased as what is wrong and how to fix it."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message ('' when it has none): what a one-line error quotes of a cause."""
    return str(exc).splitlines()[0] if str(exc) else ""
