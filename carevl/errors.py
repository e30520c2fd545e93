"""The base of every error that carries a short reason code.

A bad row, image or pair ends as a quarantine row (curation) or a row status (refinement, training,
evaluation) whose `reason` is this code; the message is for people.
"""
from __future__ import annotations


class ReasonError(ValueError):
    """Bad input with a machine-readable `reason` (e.g. `image_too_large`) and a readable message."""

    def __init__(self, reason: str, message: str | None = None):
        super().__init__(f"{reason}: {message}" if message else reason)
        self.reason = reason
