"""Errors caused by the user's input. The CLI prints them as one line and exits with code 2; the UI shows the line."""
from __future__ import annotations

import sys


class UserError(ValueError):
    """Bad input (config, prompt, file, path). The message names the fix."""


class ConfigError(UserError):
    """A config value, key or file is invalid."""


def is_user_error(e: BaseException) -> bool:
    """UserError, or a guidance loading error (a ValueError raised for a bad --model)."""
    if isinstance(e, UserError):
        return True
    mod = sys.modules.get("distillation.guidance")
    return mod is not None and isinstance(e, getattr(mod, "GuidanceLoadError", ()))


class RunFailed(RuntimeError):
    """A run that could not finish for a reason it states in one line (e.g. training diverged). Its folder says
    `failed`; the CLI prints the line and exits with code 1."""
