"""The Reporting API itself: report runs, report types and their result files."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from airflow_provider_reportruns.client.errors import StripeError, StripeTransientError, note_attempts
from airflow_provider_reportruns.client.files import DOWNLOAD_CHUNK_SIZE, PartFile, copy_body
from airflow_provider_reportruns.client.forms import check_created, check_id, check_list_limit, encode_form
from airflow_provider_reportruns.client.transport import MAX_IDEMPOTENCY_KEY_LENGTH, StripeTransport

__all__ = ["StripeReportingClient"]


class StripeReportingClient(StripeTransport):
    """A small client for Stripe's report runs, report types and result files.

    Takes the arguments of :class:`~airflow_provider_reportruns.client.transport.StripeTransport`:
    the key, the API base, ``stripe_account``, ``api_version``, timeouts, retries, the rate limit
    and the exception classes to raise.
    """

    def create_report_run(
        self, report_type: str, parameters: Mapping[str, Any] | None = None, *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """``POST /v1/reporting/report_runs``; one Idempotency-Key is reused on every retry.

        :param report_type: e.g. ``balance.summary.1``.
        :param parameters: ``interval_start``, ``interval_end``, ``columns``, ``payout``, … as Stripe names them.
        :param idempotency_key: the caller's key; a random one is generated when omitted.
        """
        if not isinstance(report_type, str) or not report_type.strip():
            raise ValueError("report_type must be a non-empty string such as 'balance.summary.1'.")
        key = idempotency_key if idempotency_key is not None else str(uuid.uuid4())
        if not key or len(key) > MAX_IDEMPOTENCY_KEY_LENGTH:
            raise ValueError(f"idempotency_key must be 1 to {MAX_IDEMPOTENCY_KEY_LENGTH} characters, got {len(key)}.")
        form: dict[str, Any] = {"report_type": report_type}
        if parameters:
            form["parameters"] = dict(parameters)
        return self._request(
            "POST",
            "/v1/reporting/report_runs",
            what=f"the report run for {report_type}",
            data=encode_form(form),
            idempotency_key=key,
        )

    def get_report_run(self, report_run_id: str) -> dict[str, Any]:
        """``GET /v1/reporting/report_runs/{id}``."""
        run_id = check_id(report_run_id, "report_run_id", "frr_")
        return self._request("GET", f"/v1/reporting/report_runs/{run_id}", what=f"report run {run_id}")

    def list_report_runs(
        self,
        *,
        created: int | Mapping[str, int] | None = None,
        limit: int | None = None,
        starting_after: str | None = None,
        ending_before: str | None = None,
    ) -> dict[str, Any]:
        """``GET /v1/reporting/report_runs``: one page, newest first, as Stripe returns it.

        :param created: Unix seconds, or a mapping with any of ``gt``, ``gte``, ``lt``, ``lte``.
        :param limit: 1 to 100 (Stripe's default is 10).
        :param starting_after: cursor: runs after (older than) this id.
        :param ending_before: cursor: runs before (newer than) this id.
        """
        query: dict[str, Any] = {}
        if created is not None:
            query["created"] = check_created(created)
        if limit is not None:
            query["limit"] = check_list_limit(limit)
        if starting_after and ending_before:
            raise ValueError("Pass starting_after or ending_before, not both: they are opposite cursors of one list.")
        if starting_after:
            query["starting_after"] = check_id(starting_after, "starting_after", "frr_")
        if ending_before:
            query["ending_before"] = check_id(ending_before, "ending_before", "frr_")
        return self._request("GET", "/v1/reporting/report_runs", what="the report run list", params=encode_form(query))

    def iter_report_runs(
        self, *, created: int | Mapping[str, int] | None = None, page_size: int = 100
    ) -> Iterator[dict[str, Any]]:
        """Every matching report run, newest first, following ``has_more`` page by page."""
        starting_after: str | None = None
        while True:
            page = self.list_report_runs(created=created, limit=page_size, starting_after=starting_after)
            data = page.get("data") or []
            yield from data
            if not page.get("has_more") or not data:
                return
            starting_after = data[-1]["id"]

    def list_report_types(self) -> list[dict[str, Any]]:
        """``GET /v1/reporting/report_types``: the full list (Stripe does not page it)."""
        page = self._request("GET", "/v1/reporting/report_types", what="the report type list")
        return list(page.get("data") or [])

    def get_report_type(self, report_type: str) -> dict[str, Any]:
        """``GET /v1/reporting/report_types/{id}``: availability window and default columns."""
        type_id = check_id(report_type, "report_type")
        return self._request("GET", f"/v1/reporting/report_types/{type_id}", what=f"report type {type_id}")

    def download_file(
        self,
        url: str,
        write: Callable[[bytes | memoryview], Any],
        *,
        expected_size: int | None = None,
        chunk_size: int = DOWNLOAD_CHUNK_SIZE,
        what: str = "the result file",
    ) -> int:
        """Stream a result file through ``write`` in chunks; return the byte count.

        Raises when fewer or more bytes than ``expected_size`` (Stripe's ``result.size``) arrive,
        so a cut connection never passes for a complete report.
        """
        with self.open_file(url, what=what) as response:
            received = copy_body(response, write, chunk_size=chunk_size, what=what, broke_off=self._partial_download)
        if expected_size is not None and received != expected_size:
            raise self._partial_download(
                f"The download of {what} is incomplete: received {received} bytes, Stripe announced "
                f"{expected_size} (result.size)."
            )
        return received

    def _partial_download(self, message: str) -> StripeError:
        error = self._error(StripeTransientError, message)
        error.partial_download = True
        return error

    def download_atomically(
        self,
        url: str,
        open_part: Callable[[], Any],
        commit: Callable[[], None],
        discard: Callable[[], None],
        *,
        expected_size: int | None = None,
        what: str = "the result file",
    ) -> int:
        """Stream a result file into a temporary part, then ``commit`` it; ``discard`` on failure.

        ``open_part()`` returns a fresh, empty, writable binary file object (a context manager).
        A download cut off part-way is started again from the first byte, up to ``max_retries``
        times; whatever happens, no partial file is ever committed.
        """
        attempt = 0
        while True:
            try:
                with open_part() as handle:
                    received = self.download_file(url, handle.write, expected_size=expected_size, what=what)
                commit()
                return received
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    discard()
                if getattr(exc, "partial_download", False) and attempt < self.max_retries:
                    attempt += 1
                    self.retry_count += 1
                    self._sleep(self._backoff(attempt))
                    continue
                if attempt and isinstance(exc, StripeError) and exc.partial_download:
                    note_attempts(exc, attempt + 1)
                raise

    def download_to_path(
        self,
        url: str,
        destination: str | os.PathLike[str],
        *,
        expected_size: int | None = None,
        what: str = "the result file",
    ) -> str:
        """Stream a result file to a local path, atomically.

        Bytes go to a temporary file beside the destination, renamed into place only once the
        whole file arrived; a failed download leaves nothing at ``destination``. A new file gets
        the mode ``open()`` would give it (``0666`` less the umask).
        """
        import requests

        part = PartFile(destination, what=what, error_class=self.error_class)
        try:
            self.download_atomically(url, part.open, part.commit, part.discard, expected_size=expected_size, what=what)
        except OSError as exc:
            if isinstance(exc, requests.RequestException):
                raise
            raise part.cannot_write(exc) from None
        return part.path
