"""Result files on this side: streaming a body out in slices, and a local file that appears only
once complete."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_reportruns.client.errors import StripeError

if TYPE_CHECKING:
    import requests

__all__ = ["DOWNLOAD_CHUNK_SIZE", "WRITE_SLICE", "PartFile", "copy_body"]

DOWNLOAD_CHUNK_SIZE = 1 << 20
WRITE_SLICE = 64 << 10
# Attempts at a fresh temporary name before giving up (a clash needs 48 random bits to repeat).
_NAME_ATTEMPTS = 100


def copy_body(
    response: requests.Response,
    write: Callable[[bytes | memoryview], Any],
    *,
    chunk_size: int,
    what: str,
    broke_off: Callable[[str], StripeError],
) -> int:
    """Pass a streamed response's body to ``write``; return the byte count.

    :param broke_off: builds the error raised when the connection breaks part-way.
    """
    import requests

    received = 0
    try:
        for chunk in response.iter_content(chunk_size):
            # Large reads, smaller writes: on ext4 a 1 MiB page-cache write() costs far more system
            # time than sixteen 64 KiB ones (see the README's row 3).
            view = memoryview(chunk)
            for start in range(0, len(view), WRITE_SLICE):
                write(view[start : start + WRITE_SLICE])
            received += len(chunk)
    except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError) as exc:
        raise broke_off(f"The download of {what} broke off after {received} bytes ({type(exc).__name__}).") from None
    return received


class PartFile:
    """A temporary file beside ``destination``, renamed into place by :meth:`commit`.

    It is created the way ``open()`` creates a file (mode ``0666`` less the umask, and any default
    ACL of the directory), so the result file is as readable as any other file the process writes.

    :param destination: where the complete file goes.
    :param what: the file, for messages.
    :param error_class: the exception raised when the local side fails.
    """

    def __init__(self, destination: str | os.PathLike[str], *, what: str, error_class: type[StripeError]) -> None:
        self.path = os.fspath(destination)
        self._what = what
        self._error_class = error_class
        directory = os.path.dirname(os.path.abspath(self.path))
        try:
            os.makedirs(directory, exist_ok=True)
            self.part = self._create_beside(directory)
        except OSError as exc:
            raise self.cannot_write(exc) from None

    def _create_beside(self, directory: str) -> str:
        # Not tempfile.mkstemp: it creates 0600 whatever the umask.
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0)
        for _ in range(_NAME_ATTEMPTS):
            part = os.path.join(directory, f".{os.path.basename(self.path)}.{secrets.token_hex(6)}.part")
            try:
                os.close(os.open(part, flags, 0o666))
            except FileExistsError:
                continue
            return part
        raise FileExistsError(f"no free temporary name beside {self.path}")

    def open(self) -> IO[bytes]:
        """The part, emptied, for writing (a fresh start for each download attempt)."""
        return open(self.part, "wb")

    def commit(self) -> None:
        os.replace(self.part, self.path)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.part)

    def cannot_write(self, exc: OSError) -> StripeError:
        """The local side failed (disk full, a directory in the way): say so, not a raw errno."""
        reason = exc.strerror or str(exc)
        if isinstance(exc, FileExistsError) and exc.filename:
            reason = f"{exc.filename} exists and is not a directory"
        elif isinstance(exc, IsADirectoryError):
            reason = "it is a directory"
        return self._error_class(f"Cannot write {self._what} to {self.path}: {reason}.")
