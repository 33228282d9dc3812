"""What every part shows the user when something fails: one line, never a traceback."""


class ConfigError(ValueError):
    """A configuration that cannot run (a setting, or a folder it names); the message is one
    line for the user."""


def first_line(error: BaseException) -> str:
    """The first line of an exception's message, or its type name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__
