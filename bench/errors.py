"""The one exception type for bad user input, importable from anywhere without pulling torch or configs."""


class ConfigError(ValueError):
    """Bad user input; the CLI prints it as one line and exits 2."""
