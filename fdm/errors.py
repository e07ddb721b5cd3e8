"""User-facing errors.

Every problem caused by bad input (a missing data directory, an unknown config
key, an unreadable image, an out-of-range value) is raised as a `UserError`
whose message is ONE line naming the thing and the fix. `experiments/main.py`
prints it and exits with code 2; nothing partial is written before raising.
"""


class UserError(Exception):
    """Bad input from the user; the message is one line: the problem and the fix."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))


class TrainingStopped(Exception):
    """A SIGTERM stopped training before train.num_steps (its checkpoint is saved) where
    the caller needed the finished model; the same command resumes."""


class NonFiniteLossError(RuntimeError):
    """Training produced a non-finite loss or gradient; the last good checkpoint is kept."""
