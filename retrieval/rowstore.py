"""The rows of a sharded collection, readable by the row: one Arrow IPC file per collection shard, its
identities (and vectors) in record batches of ``ROWS_PER_BATCH``. A gather reads the batches that hold its
hits, so what a query shard reads follows its hits, not the collection (``retrieval.postings``; UNIMO App. A's
embedding rerank reads its candidates' vectors, the links their identities).

A shard's file is opened through ``open_rows(position)`` (its position in the collection; a seekable binary
stream: a local file, an object-store stream, ``io.BytesIO``).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import IO

import numpy as np

from retrieval.tfidf import ROW_BITS, Gathered, Hits, distinct

ROWS_PER_BATCH = 1024  # rows a gather reads at least (one record batch): 1.5 MB of 384-d vectors
OPEN_READERS = 256  # files a worker keeps open (their footers): a query shard's hits touch many shards
VECTOR = "vector"


def rows_bytes(columns: dict[str, list], vectors: np.ndarray | None) -> bytes:
    """One collection shard's rows as an Arrow IPC file: ``columns`` (name -> one value per row) and, when
    given, ``vectors`` (rows, dim) as a fixed-size list column."""
    import pyarrow as pa

    arrays = {name: pa.array(values) for name, values in columns.items()}
    if vectors is not None and len(vectors):
        arrays[VECTOR] = pa.FixedSizeListArray.from_arrays(pa.array(np.ascontiguousarray(vectors).ravel()),
                                                           vectors.shape[1])
    table = pa.table(arrays) if arrays else pa.table({"_": pa.nulls(0)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table, max_chunksize=ROWS_PER_BATCH)
    return sink.getvalue().to_pybytes()


class RowStore:
    """The rows of a collection's shards, read by the batch and by the column: a gather reads the buffers of
    the columns it asks for alone (Arrow's ``included_fields``), so reading hits' identities does not read
    their vectors (the last ``OPEN_READERS`` files, each for one set of columns, kept open)."""

    def __init__(self, open_rows: Callable[[int], IO[bytes]]):
        self.open_rows = open_rows
        self.readers: OrderedDict[tuple, object] = OrderedDict()

    def _reader(self, position: int, columns: tuple[str, ...] | None, vectors: bool):
        """The file of ``position`` opened to read ``columns`` (None: all but the vector) and the vector if asked."""
        import pyarrow as pa

        key = (position, columns, vectors)
        if key in self.readers:
            self.readers.move_to_end(key)
            return self.readers[key]
        stream = self.open_rows(position)
        names = pa.ipc.open_file(stream).schema.names
        wanted = [n for n in names if n != VECTOR] if columns is None else list(columns)
        fields = [names.index(name) for name in wanted + ([VECTOR] if vectors else [])]
        self.readers[key] = pa.ipc.open_file(stream, options=pa.ipc.IpcReadOptions(included_fields=fields))
        if len(self.readers) > OPEN_READERS:
            self.readers.popitem(last=False)
        return self.readers[key]

    def gather(self, found: Iterable[Hits], columns: Iterable[str] | None = None, vectors: bool = False) -> Gathered:
        """The identities (``columns``: those named, None: all but the vector) and/or vectors of every hit's row,
        as ``tfidf.gather`` gives them: aligned with the sorted distinct tie keys."""
        ties = distinct(np.concatenate([np.zeros(0, np.int64), *(hits.ties for hits in found)]))
        columns = None if columns is None else tuple(columns)
        out: dict[str, list] = {name: [] for name in columns or ()}
        stacked = []
        for _, values, found_vectors in self.each_shard(ties, columns, vectors):
            for name, these in values.items():
                out.setdefault(name, []).extend(these)
            if vectors:
                stacked.append(found_vectors)
        return Gathered(ties, out, np.concatenate(stacked) if stacked else None)

    def each_shard(self, ties: np.ndarray, columns: tuple[str, ...] | None, vectors: bool
                   ) -> Iterator[tuple[np.ndarray, dict[str, list], np.ndarray | None]]:
        """Per collection shard holding some of ``ties`` (sorted, distinct), in order: those ties, their rows'
        ``columns`` (None: all but the vector) and, if asked, their vectors: a caller can hold one shard's."""
        shards, rows = ties >> ROW_BITS, ties & ((1 << ROW_BITS) - 1)
        for position in distinct(shards).tolist():
            first, last = np.searchsorted(shards, [position, position + 1])
            reader, these = self._reader(position, columns, vectors), rows[first:last]
            names = [n for n in reader.schema.names if n != VECTOR]
            values: dict[str, list] = {name: [] for name in names}
            stacked = []
            batches = these // ROWS_PER_BATCH
            for batch in distinct(batches).tolist():
                at = these[batches == batch] - batch * ROWS_PER_BATCH
                table = reader.get_batch(batch)
                for name in names:
                    values[name].extend(table.column(name).take(at).to_pylist())
                if vectors:
                    column = table.column(VECTOR)
                    stacked.append(column.take(at).flatten().to_numpy().reshape(len(at), column.type.list_size))
            yield ties[first:last], values, np.concatenate(stacked) if vectors else None
