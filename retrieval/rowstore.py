"""The rows of a sharded collection, readable by the row: one Arrow IPC file per collection shard, its
identities in record batches of ``ROWS_PER_BATCH``. A gather reads the batches that hold its hits, so what a
query shard reads follows its hits, not the collection (``retrieval.postings``; the links read their
identities; UNIMO App. A's embedding rerank reads its candidates' vectors from ``retrieval.codes``).

A shard's file is opened through ``open_rows(position)`` (its position in the collection; a seekable binary
stream: a local file, an object-store stream, ``io.BytesIO``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import IO

import numpy as np

from retrieval.tfidf import ROW_BITS, Gathered, Hits, distinct

ROWS_PER_BATCH = 1024  # rows a gather reads at least (one record batch)
OPEN_READERS = 256  # files a worker keeps open (their footers): a query shard's hits touch many shards


def rows_bytes(columns: dict[str, list]) -> bytes:
    """One collection shard's rows as an Arrow IPC file: ``columns`` (name -> one value per row)."""
    import pyarrow as pa

    arrays = {name: pa.array(values) for name, values in columns.items()}
    table = pa.table(arrays) if arrays else pa.table({"_": pa.nulls(0)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=ROWS_PER_BATCH)
    return sink.getvalue().to_pybytes()


class RowStore:
    """The rows of a collection's shards, read by the batch and by the column: a gather reads the buffers of
    the columns it asks for alone (Arrow's ``included_fields``; the last ``OPEN_READERS`` files, each for one
    set of columns, kept open)."""

    def __init__(self, open_rows: Callable[[int], IO[bytes]]):
        self.open_rows = open_rows
        self.readers: OrderedDict[tuple, object] = OrderedDict()

    def _reader(self, position: int, columns: tuple[str, ...] | None):
        """The file of ``position`` opened to read ``columns`` (None: all)."""
        import pyarrow as pa

        key = (position, columns)
        if key in self.readers:
            self.readers.move_to_end(key)
            return self.readers[key]
        stream = self.open_rows(position)
        names = pa.ipc.open_file(stream).schema.names
        fields = [names.index(name) for name in (names if columns is None else columns)]
        self.readers[key] = pa.ipc.open_file(stream, options=pa.ipc.IpcReadOptions(included_fields=fields))
        if len(self.readers) > OPEN_READERS:
            self.readers.popitem(last=False)
        return self.readers[key]

    def gather(self, found: Iterable[Hits], columns: Iterable[str] | None = None) -> Gathered:
        """The identities (``columns``: those named, None: all) of every hit's row, as ``tfidf.gather`` gives
        them: aligned with the sorted distinct tie keys."""
        ties = distinct(np.concatenate([np.zeros(0, np.int64), *(hits.ties for hits in found)]))
        columns = None if columns is None else tuple(columns)
        out: dict[str, list] = {name: [] for name in columns or ()}
        shards, rows = ties >> ROW_BITS, ties & ((1 << ROW_BITS) - 1)
        for position in distinct(shards).tolist():
            first, last = np.searchsorted(shards, [position, position + 1])
            reader, these = self._reader(position, columns), rows[first:last]
            batches = these // ROWS_PER_BATCH
            for batch in distinct(batches).tolist():
                at = these[batches == batch] - batch * ROWS_PER_BATCH
                table = reader.get_batch(batch)
                for name in reader.schema.names:
                    out.setdefault(name, []).extend(table.column(name).take(at).to_pylist())
        return Gathered(ties, out)
