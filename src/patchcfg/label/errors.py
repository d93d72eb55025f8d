"""The labelling app's refusals: a user error with the HTTP status the app answers it with."""

from __future__ import annotations

from patchcfg.errors import UserError


class RequestError(UserError):
    """A request the app refuses; ``status`` is the HTTP status the app answers with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status
