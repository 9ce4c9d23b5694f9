"""The lines ``search`` and ``worker`` print when their run is over."""

from __future__ import annotations

from compressor.search import SearchResult

__all__ = ["summary"]


def summary(result: SearchResult) -> str:
    from compressor.report import front_table  # pandas and seaborn: only once the search is over

    counts = {}
    for record in result.records:
        counts[record.status] = counts.get(record.status, 0) + 1
    states = ", ".join(f"{count} {status}" for status, count in sorted(counts.items()))
    return "\n".join([
        "",
        front_table(result.study, result.storage_url),
        "",
        f"study {result.study_name!r}: {len(result.records)} trials ({states}) in {result.storage_url}; "
        f"this run took {result.seconds:.0f} s",
        *([result.confirmation.table(), ""] if result.confirmation is not None else []),
        f"report: compressor report --study {result.study_name} --storage {result.storage_url}",
    ])
