"""Exceptions every layer above the codec shares (the codec has its own PayloadError)."""


class UsageError(Exception):
    """Bad user input (options, data, paths): one line, exit code 2, every rank."""


class StopTraining(Exception):
    """Training stopped early on purpose; ``exit_code`` says why (see README)."""

    def __init__(self, message: str, *, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code
