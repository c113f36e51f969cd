"""IDX files (the MNIST / Fashion-MNIST container), gzipped or not.

Format: two zero bytes, a type code, the number of dimensions ``r``, then ``r`` big-endian uint32
sizes, then the values in row-major order, big-endian. The reader checks every field and that the
payload holds exactly as many bytes as the sizes say, so a truncated download fails here with the
file's name instead of as a reshape error or a silent short dataset later.
"""

from __future__ import annotations

import gzip
import math
import os
import struct
import sys
import zlib
from pathlib import Path

import torch

# type code -> (torch dtype, bytes per value)
_IDX_TYPES: dict[int, tuple[torch.dtype, int]] = {
    0x08: (torch.uint8, 1),
    0x09: (torch.int8, 1),
    0x0B: (torch.int16, 2),
    0x0C: (torch.int32, 4),
    0x0D: (torch.float32, 4),
    0x0E: (torch.float64, 8),
}

_GZIP_MAGIC = b"\x1f\x8b"


def _read_bytes(path: Path) -> bytes:
    """The file's content, decompressed when it is gzip (told by its magic bytes, not its name)."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"read_idx: no such file: {path}") from None
    except IsADirectoryError:
        raise IsADirectoryError(f"read_idx: path is a folder, not an IDX file: {path}") from None
    if raw[:2] != _GZIP_MAGIC:
        return raw
    try:
        return gzip.decompress(raw)
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(f"read_idx: {path} is a damaged or truncated gzip file ({e}); download it again") from e


def read_idx(path: str | os.PathLike[str]) -> torch.Tensor:
    """Read an IDX file into a tensor.

    Args:
        path: the file; gzip-compressed files are recognised by their content, whatever their name.

    Returns:
        A tensor of the file's dtype (uint8, int8, int16, int32, float32 or float64) and shape, in
        native byte order.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: bad magic bytes, an unknown type code, or a payload that is shorter or longer
            than the sizes in the header say (the message names the file and the byte counts).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"read_idx: path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    buf = _read_bytes(path)
    if len(buf) < 4:
        raise ValueError(f"read_idx: {path} is too short to be an IDX file ({len(buf)} bytes, header needs 4)")
    zero0, zero1, code, ndim = buf[0], buf[1], buf[2], buf[3]
    if zero0 != 0 or zero1 != 0 or code not in _IDX_TYPES:
        raise ValueError(
            f"read_idx: {path} is not an IDX file: magic bytes {buf[:4].hex()} (expected 0000 followed by a "
            f"type code in {{{', '.join(f'{c:02x}' for c in _IDX_TYPES)}}} and the number of dimensions)"
        )
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise ValueError(
            f"read_idx: {path} is truncated: its header declares {ndim} dimensions ({header} header bytes) "
            f"but the file has {len(buf)} bytes"
        )
    shape = struct.unpack(f">{ndim}I", buf[4:header])
    dtype, itemsize = _IDX_TYPES[code]
    expected = math.prod(shape) * itemsize
    got = len(buf) - header
    if got != expected:
        what = "truncated" if got < expected else "longer than its header says"
        raise ValueError(
            f"read_idx: {path} is {what}: shape {list(shape)} of {dtype} needs {expected} data bytes, "
            f"found {got}"
        )
    if expected == 0:
        return torch.empty(shape, dtype=dtype)
    # bytearray: a writable buffer, so torch.frombuffer does not warn, and the tensor owns its memory.
    data = torch.frombuffer(bytearray(memoryview(buf)[header:]), dtype=torch.uint8)
    if itemsize > 1 and sys.byteorder == "little":
        # IDX values are big-endian: reverse the bytes of each value before reinterpreting them.
        data = data.view(-1, itemsize).flip(-1).contiguous().view(-1)
    return data.view(dtype).reshape(shape)
