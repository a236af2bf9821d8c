"""LoadResult: what one load or write did, for logs, schedulers and notebooks."""

from __future__ import annotations

from dataclasses import dataclass, field
from html import escape


@dataclass
class LoadResult:
    """Counts of a load. ``rows_written`` = ``rows_inserted`` + ``rows_updated``.

    The paging side: ``pages`` fetched in all, of which ``pages_refetched`` re-read a range
    after neighbouring pages were found not to overlap (``gaps_repaired`` such ranges), and
    the API's ``total_count`` at the start and the end of the load (it moves while new
    executions arrive). ``lowest_concurrency`` is where rate limiting pushed the pool;
    ``overlap`` the most rows neighbouring pages fetched in parallel were planned to share
    (as many as the list's movement required; 0 when no pages were fetched in parallel).
    A DataFrame load carries its result in ``frame.attrs["eachlabs"]``. A load of several
    workflows sums them, keeps each in ``workflows`` and lists the ones that failed (with
    ``on_error="skip"``) in ``failed``, workflow id -> error message. ``incremental`` says
    the load read only what changed since the last one (every workflow, for several);
    ``fallbacks`` maps each workflow an incremental run loaded in full instead to why.
    ``table_version`` is the Delta table's version after the load (None for other outputs;
    the version it already had when the load changed nothing).
    """

    output: str | None = None
    rows_fetched: int = 0
    rows_returned: int = 0
    rows_written: int = 0
    rows_inserted: int = 0
    rows_updated: int = 0
    partitions_touched: int = 0
    files_written: int = 0
    requests: int = 0
    retries: int = 0
    pages: int = 0
    pages_refetched: int = 0
    gaps_repaired: int = 0
    total_count_start: int | None = None
    total_count_end: int | None = None
    concurrency: int = 1
    lowest_concurrency: int = 1
    overlap: int = 0
    elapsed_s: float = 0.0
    workflows: dict[str, LoadResult] = field(default_factory=dict, repr=False)
    failed: dict[str, str] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict, repr=False)
    incremental: bool = False
    fallbacks: dict[str, str] = field(default_factory=dict)
    table_version: int | None = None

    def __repr__(self) -> str:
        where = f"{self.output!r}: " if self.output is not None else ""
        written = (
            f"{self.rows_written:,} written ({self.rows_inserted:,} new, "
            f"{self.rows_updated:,} updated) in {self.files_written:,} files of "
            f"{self.partitions_touched:,} partitions touched"
            if self.output is not None
            else f"{self.rows_returned:,} returned"
        )
        failures = (
            f", {len(self.failed)} workflow(s) FAILED: {sorted(self.failed)}" if self.failed else ""
        )
        if self.table_version is not None:
            failures += f", Delta version {self.table_version}"
        if self.incremental:
            failures += ", incremental"
        elif self.fallbacks:
            failures += f", full load instead of incremental for {sorted(self.fallbacks)}"
        return (
            f"<LoadResult {where}{self.rows_fetched:,} rows fetched, {written}{failures}; "
            f"{self.requests:,} requests, {self.retries:,} retries, "
            f"{self.pages_refetched:,} pages re-fetched, total_count "
            f"{self.total_count_start}->{self.total_count_end}, {self.elapsed_s:.2f}s>"
        )

    def _repr_html_(self) -> str:
        """A small table for Jupyter: a notebook shows what a load did at a glance, and the
        failures in red, without the reader parsing the one-line repr."""
        to_lake = self.output is not None
        rows = [
            ("output", self.output if to_lake else "DataFrame"),
            ("rows fetched", f"{self.rows_fetched:,}"),
            (
                "rows written" if to_lake else "rows returned",
                f"{self.rows_written if to_lake else self.rows_returned:,}",
            ),
        ]
        if to_lake:
            rows += [
                ("inserted / updated", f"{self.rows_inserted:,} / {self.rows_updated:,}"),
                ("files written", f"{self.files_written:,}"),
            ]
        if self.table_version is not None:
            rows.append(("Delta version", str(self.table_version)))
        rows += [
            ("requests", f"{self.requests:,}"),
            ("retries", f"{self.retries:,}"),
            ("time", f"{self.elapsed_s:.2f} s"),
            ("mode", self._mode()),
        ]
        cells = "".join(
            f"<tr><th style='text-align:left'>{escape(name)}</th>"
            f"<td style='text-align:right'>{escape(str(value))}</td></tr>"
            for name, value in rows
        )
        failures = "".join(
            f"<tr><th style='text-align:left;color:#b00'>failed: {escape(flow)}</th>"
            f"<td style='color:#b00'>{escape(message)}</td></tr>"
            for flow, message in sorted(self.failed.items())
        )
        return f"<table><caption>LoadResult</caption>{cells}{failures}</table>"

    def _mode(self) -> str:
        if self.incremental:
            return "incremental"
        if self.fallbacks:
            return f"full load instead of incremental for {', '.join(sorted(self.fallbacks))}"
        return "full load"
