"""Arrow arrays as numpy without pyarrow's pandas path.

pyarrow's `to_numpy` goes through its pandas conversion for several types, which imports
pandas (~50 MB resident) when it is installed. Numbers and booleans are read straight from
the Arrow data buffer instead; anything else (strings, timestamps) takes `to_numpy`.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Arrow type names read from their data buffer
_NUMERIC = {name: np.dtype(name) for name in (
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64")}
_NUMERIC.update({"float": np.dtype(np.float32), "double": np.dtype(np.float64)})


def array_to_numpy(arr: Any) -> np.ndarray:
    """One Arrow Array WITHOUT nulls as numpy: numbers as a read-only view of its data
    buffer, booleans unpacked from its bitmap, other types through `to_numpy`."""
    kind, n, off = str(arr.type), len(arr), arr.offset
    dtype = _NUMERIC.get(kind)
    if dtype is not None:
        if n == 0:
            return np.empty(0, dtype)
        return np.frombuffer(arr.buffers()[1], dtype=dtype, count=n,
                             offset=off * dtype.itemsize)
    if kind == "bool":
        if n == 0:
            return np.empty(0, np.bool_)
        bits = np.frombuffer(arr.buffers()[1], dtype=np.uint8)
        return np.unpackbits(bits, count=off + n, bitorder="little")[off:].view(np.bool_)
    return arr.to_numpy(zero_copy_only=False)


def column_to_numpy(col: Any) -> np.ndarray:
    """A ChunkedArray as a read-only numpy copy of its chunks (the Arrow buffers can be
    freed at once); a column with nulls takes pyarrow's `to_numpy` (NaN / None)."""
    if col.null_count or not col.num_chunks:
        return col.to_numpy()
    out = np.concatenate([array_to_numpy(c) for c in col.chunks])
    out.flags.writeable = False
    return out
