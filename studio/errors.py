"""Errors caused by the user's input. The CLI prints them as one line and exits with code 2."""


class UserError(ValueError):
    """Bad input (config, prompt, file, path). The message names the fix."""


class ConfigError(UserError):
    """A config value, key or file is invalid."""
