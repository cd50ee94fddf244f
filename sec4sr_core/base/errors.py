"""User-facing errors.

Every error a user can cause (a typo in a name, a bad parameter, a broken audio file) is a :class:`Sec4srError`.
The CLI prints it as one line and exits non-zero; it never shows a traceback for them.
"""

from __future__ import annotations


class Sec4srError(Exception):
    """An error caused by input: printed as ``error: <message>``, exit status 2."""

    exit_code = 2


class UnknownComponentError(Sec4srError):
    """A component or preset name that no loaded plugin registered."""


class ParameterError(Sec4srError):
    """A component parameter that fails validation."""


class AudioError(Sec4srError):
    """An audio file that is missing, unreadable, corrupt or empty."""


class PluginError(Sec4srError):
    """A plugin that cannot be loaded or that registers a conflicting name."""


class KnowledgeError(Sec4srError):
    """An attack asked its oracle for more than its declared knowledge level allows."""


class NotTrainedError(Sec4srError):
    """A backbone that needs weights which are not in the model store yet."""
