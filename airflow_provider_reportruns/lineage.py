"""OpenLineage datasets for what the operators read from Stripe and where they put it.

Only the operators' ``get_openlineage_facets_on_complete`` methods use this module, and the
OpenLineage provider calls those only when it is installed and configured: the names below are
plain strings, and the provider's classes are imported inside :func:`operator_lineage`, so a DAG
parse or a deployment without the provider pays nothing.

Dataset names, following OpenLineage's naming conventions:

* a Stripe report (input): namespace ``stripe://<API host>`` (``stripe://api.stripe.com``), name
  the report type (``balance.summary.1``), prefixed with the connected account when the connection
  acts on one (``acct_123/balance.summary.1``). The key never appears: two connections with
  different keys to the same account name the same dataset, which is what lineage wants.
* a result file (output): a local file is namespace ``file`` and its absolute path; an object
  storage URI ``s3://bucket/key`` is namespace ``s3://bucket`` and name ``key``.
* a table (output): the database's namespace as its SQL hook gives it (``postgres://host:5432``),
  name ``database.schema.table``; SQLite, whose hook gives none, is ``sqlite://<database file>``
  and ``main.<table>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple
from urllib.parse import unquote, urlsplit

if TYPE_CHECKING:
    from airflow_provider_reportruns.client import StripeReportingClient

__all__ = [
    "DatasetId",
    "file_dataset",
    "operator_lineage",
    "report_dataset",
    "stripe_report_dataset",
    "table_dataset",
]


class DatasetId(NamedTuple):
    """An OpenLineage dataset's identity: ``namespace`` and ``name``."""

    namespace: str
    name: str


def report_dataset(api_base: str, report_type: str, stripe_account: str | None = None) -> DatasetId:
    """The Stripe report type read from one account at one API host.

    :param api_base: the client's API base URL (``https://api.stripe.com``).
    :param report_type: e.g. ``balance_change_from_activity.itemized.3``.
    :param stripe_account: the connected account the connection acts on, if any.
    """
    host = urlsplit(api_base).netloc or api_base
    name = f"{stripe_account}/{report_type}" if stripe_account else report_type
    return DatasetId(f"stripe://{host}", name)


def stripe_report_dataset(client: StripeReportingClient, report_type: str) -> DatasetId:
    """:func:`report_dataset` for the account a client speaks for (no request is made)."""
    return report_dataset(client.api_base, report_type, client.stripe_account)


def file_dataset(uri: str) -> DatasetId:
    """A stored result file: a local path or ``file://`` URI, or an object storage URI.

    :param uri: what the storage operator returned.
    """
    parts = urlsplit(uri)
    if "://" not in uri or parts.scheme == "file":
        import os

        path = unquote(parts.path) if parts.scheme == "file" else uri
        return DatasetId("file", os.path.abspath(path))
    return DatasetId(f"{parts.scheme}://{parts.netloc}", parts.path.lstrip("/") or "/")


def table_dataset(sql_hook: Any, table: str, schema: str | None = None) -> DatasetId:
    """A table reached through an Airflow SQL hook (``common.sql``'s ``DbApiHook``).

    The hook's own OpenLineage database info gives the namespace and database, as the SQL
    operators of the OpenLineage provider name the same tables; a hook without it (SQLite) is
    named from its connection.

    :param sql_hook: the hook the rows went through.
    :param table: the table name, without schema.
    :param schema: the table's schema; defaults to the hook's (``public`` for PostgreSQL).
    """
    connection = sql_hook.get_connection(getattr(sql_hook, sql_hook.conn_name_attr))
    info = sql_hook.get_openlineage_database_info(connection)
    if info is None:
        if connection.conn_type == "sqlite":
            return DatasetId(f"sqlite://{_sqlite_path(connection)}", f"{schema or 'main'}.{table}")
        host = connection.host or "localhost"
        authority = f"{host}:{connection.port}" if connection.port else host
        parts = [connection.schema, schema, table]
        return DatasetId(f"{connection.conn_type}://{authority}", ".".join(p for p in parts if p))
    namespace = f"{info.scheme}://{info.authority}" if info.authority else str(info.scheme)
    database = info.database or connection.schema
    schema = schema or _default_schema(sql_hook)
    return DatasetId(namespace, ".".join(p for p in (database, schema, table) if p))


def operator_lineage(inputs: Sequence[DatasetId], outputs: Sequence[DatasetId]) -> Any:
    """The OpenLineage provider's ``OperatorLineage`` for these datasets; ``None`` when the
    provider (or its client) cannot be imported, which the provider treats as "no lineage"."""
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import Dataset
    except ImportError:
        return None
    return OperatorLineage(
        inputs=[Dataset(namespace=d.namespace, name=d.name) for d in inputs],
        outputs=[Dataset(namespace=d.namespace, name=d.name) for d in outputs],
    )


def _sqlite_path(connection: Any) -> str:
    import os

    # The SQLite hook takes the database file from the host field (or a sqlite:// URI there).
    host = str(connection.host or "")
    if host.startswith("sqlite:"):
        host = urlsplit(host).path
    return os.path.abspath(host) if host and host != ":memory:" else ":memory:"


def _default_schema(sql_hook: Any) -> str | None:
    # PostgresHook's own default asks the server (SELECT CURRENT_SCHEMA); the lineage event must
    # not open a connection, and a table created without a schema lands in "public".
    if type(sql_hook).__name__ == "PostgresHook":
        return "public"
    try:
        return sql_hook.get_openlineage_default_schema()  # type: ignore[no-any-return]
    except Exception:
        return None
