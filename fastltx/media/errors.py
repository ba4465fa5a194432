"""The error every media reader and writer raises: one line naming the file and the problem."""

import os


class MediaError(ValueError):
    """A media file cannot be used; the message names the file and what is wrong."""

    def __init__(self, path: str | os.PathLike, problem: str):
        self.path, self.problem = str(path), problem
        super().__init__(f"{path}: {problem}")
