"""A CSV byte stream split into whole records as it arrives, for a COPY fed from a download."""

from __future__ import annotations

import csv

__all__ = ["CsvRecords", "ReportLoadError"]


class ReportLoadError(Exception):
    """A load failed and was rolled back; the table keeps the rows it had."""


class CsvRecords:
    """Splits a CSV byte stream into whole records, the header apart, each record followed by
    ``suffix`` and a newline; blank lines and ``\\r`` before a newline are dropped.

    A newline ends a record when the count of ``"`` since the record began is even (a quoted
    field may hold newlines; ``""`` escapes a quote). A chunk without ``"``, ``\\r`` or blank lines
    is transformed with one ``bytes.replace``: Python never sees its records one by one, which
    keeps a COPY fed from this as fast as the server takes it.

    :param suffix: bytes to append to every record (the constant provenance cells).
    """

    def __init__(self, suffix: bytes = b"") -> None:
        self._suffix_nl = suffix + b"\n"
        self.header: list[str] | None = None
        self.records = 0
        self._pending = b""  # the start of a record not yet ended
        self._quoted = False  # whether the data so far ends inside a quoted field

    def feed(self, data: bytes | memoryview) -> bytes:
        """The whole records ``data`` completes (the header is parsed into :attr:`header`)."""
        data = bytes(data)
        if (
            self.header is not None
            and not self._quoted
            and b'"' not in data
            and b"\r" not in data
            and b"\n\n" not in data
            and (self._pending or not data.startswith(b"\n"))
            and not self._pending.endswith(b"\r")
        ):
            first = data.find(b"\n")
            if first < 0:
                self._pending += data
                return b""
            last = data.rfind(b"\n")
            head, self._pending = self._pending + data[:first], data[last + 1 :]
            self.records += data.count(b"\n")
            return head + self._suffix_nl + data[first + 1 : last + 1].replace(b"\n", self._suffix_nl)
        return self._feed_slowly(data)

    def _feed_slowly(self, data: bytes) -> bytes:
        out: list[bytes] = []
        start = pos = 0
        while (newline := data.find(b"\n", pos)) >= 0:
            if data.count(b'"', pos, newline) % 2:
                self._quoted = not self._quoted
            pos = newline + 1
            if self._quoted:
                continue
            record = data[start:newline]
            if self._pending:
                record, self._pending = self._pending + record, b""
            start = pos
            self._emit(record, out)
        if data.count(b'"', pos) % 2:
            self._quoted = not self._quoted
        self._pending += data[start:]
        return b"".join(out)

    def finish(self) -> bytes:
        """The last record, when the file does not end with a newline.

        :raises ReportLoadError: when the file ends inside a quoted field.
        """
        if self._quoted:
            raise ReportLoadError("The result file ends inside a quoted CSV field: it is not a whole CSV file.")
        out: list[bytes] = []
        record, self._pending = self._pending, b""
        self._emit(record, out)
        return b"".join(out)

    def _emit(self, record: bytes, out: list[bytes]) -> None:
        if record.endswith(b"\r"):
            record = record[:-1]
        if not record:
            return
        if self.header is None:
            text = record.decode("utf-8-sig")
            self.header = next(csv.reader([text]))
            return
        out.append(record)
        out.append(self._suffix_nl)
        self.records += 1


# -------------------------------------------------------------------------------------------------
# Databases
