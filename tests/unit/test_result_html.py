"""LoadResult as Jupyter shows it: a table of what the load did, failures included."""

from __future__ import annotations

from html.parser import HTMLParser

from eachlabs_loader import LoadResult


class _Cells(HTMLParser):
    """Each table row's header and cell text, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[tuple[str, str]] = []
        self._texts: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("th", "td"):
            self._in_cell = True
            self._texts.append("")

    def handle_endtag(self, tag: str) -> None:
        if tag in ("th", "td"):
            self._in_cell = False
        if tag == "tr":
            self.rows.append((self._texts[0], self._texts[1]))
            self._texts = []

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self._texts[-1] += data


def cells(result: LoadResult) -> dict[str, str]:
    parser = _Cells()
    parser.feed(result._repr_html_())
    return dict(parser.rows)


def test_a_lake_load_shows_rows_files_requests_and_time() -> None:
    result = LoadResult(
        output="s3://bucket/eachlabs",
        rows_fetched=5_550,
        rows_written=5_000,
        rows_inserted=4_000,
        rows_updated=1_000,
        files_written=7,
        requests=56,
        retries=2,
        elapsed_s=0.634,
    )
    assert cells(result) == {
        "output": "s3://bucket/eachlabs",
        "rows fetched": "5,550",
        "rows written": "5,000",
        "inserted / updated": "4,000 / 1,000",
        "files written": "7",
        "requests": "56",
        "retries": "2",
        "time": "0.63 s",
        "mode": "full load",
    }


def test_a_dataframe_load_shows_rows_returned_and_no_files() -> None:
    shown = cells(LoadResult(rows_fetched=120, rows_returned=100, incremental=False))
    assert shown["output"] == "DataFrame"
    assert shown["rows returned"] == "100"
    assert "files written" not in shown and "rows written" not in shown


def test_failures_and_modes_are_shown_escaped() -> None:
    result = LoadResult(
        output="lake/",
        failed={"wf-<b>": "workflow 'wf-<b>' at offset 0: HTTP 404: <script>x</script>"},
        fallbacks={"wf-a": "no state yet"},
        table_version=3,
    )
    html = result._repr_html_()
    assert "<script>" not in html and "&lt;script&gt;" in html
    shown = cells(result)
    assert shown["failed: wf-<b>"].endswith("HTTP 404: <script>x</script>")
    assert shown["Delta version"] == "3"
    assert shown["mode"] == "full load instead of incremental for wf-a"
    assert cells(LoadResult(output="lake/", incremental=True))["mode"] == "incremental"
