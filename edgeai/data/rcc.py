"""A reader for Qt's binary resource bundles (``.rcc``), the way gcompris-qt-data ships its images.

The format (Qt's ``rcc --binary``, versions 1 to 3), all integers big-endian:

- header: ``b"qres"``, version (u32), then the offsets of the tree, the data and the names
  (u32 each); version 3 adds a u32 of flags;
- tree: fixed-size nodes, the root first: name offset (u32), flags (u16: 1 zlib, 2 directory,
  4 zstd), then for a directory its child count and first child index (u32, u32), for a file
  its country and language (u16, u16) and data offset (u32); version 2 and later append the
  modification time (u64);
- names: length in UTF-16 code units (u16), a hash (u32), the name in UTF-16BE;
- data: length (u32), then the bytes; a zlib entry starts with its uncompressed size (u32).
"""

from __future__ import annotations

import struct
import zlib

from edgeai.errors import EdgeAIError

_ZLIB, _DIR, _ZSTD = 1, 2, 4


class RccError(EdgeAIError):
    """A file that is not a Qt binary resource bundle, or a damaged one."""


def read_rcc(blob: bytes, what: str = "the bundle") -> dict[str, bytes]:
    """Every file of a bundle: ``{path inside the bundle: bytes}``, decompressed.
    Zstd entries (Qt 5.13's rcc can write them; none of the bundles edgeai reads do) are refused."""
    if blob[:4] != b"qres" or len(blob) < 20:
        raise RccError(f"{what} is not a Qt resource bundle (it does not start with 'qres').")
    version, tree, data, names = struct.unpack_from(">IIII", blob, 4)
    if not 1 <= version <= 3:
        raise RccError(f"{what} is a Qt resource bundle of format {version}; this reader knows formats 1 to 3.")
    node_size = 14 if version == 1 else 22
    files: dict[str, bytes] = {}
    pending = [(0, "")]
    try:
        while pending:
            index, prefix = pending.pop()
            offset = tree + index * node_size
            name_at, flags = struct.unpack_from(">IH", blob, offset)
            path = prefix + _name(blob, names + name_at) if index else ""
            if flags & _DIR:
                count, first = struct.unpack_from(">II", blob, offset + 6)
                if first <= index or tree + (first + count) * node_size > len(blob):  # children follow parents
                    raise RccError(f"{what} is a damaged Qt resource bundle (directory node {index} points outside the tree).")
                pending += [(child, path + "/" if index else "") for child in range(first, first + count)]
            else:
                (data_at,) = struct.unpack_from(">I", blob, offset + 10)
                files[path] = _payload(blob, data + data_at, flags, f"{path} in {what}")
    except (struct.error, zlib.error, UnicodeDecodeError) as e:
        raise RccError(f"{what} is a damaged Qt resource bundle ({e}).") from None
    return files


def _name(blob: bytes, at: int) -> str:
    (length,) = struct.unpack_from(">H", blob, at)
    raw = blob[at + 6 : at + 6 + 2 * length]
    if len(raw) != 2 * length:
        raise struct.error("a name runs past the end of the file")
    return raw.decode("utf-16-be")


def _payload(blob: bytes, at: int, flags: int, what: str) -> bytes:
    (length,) = struct.unpack_from(">I", blob, at)
    raw = blob[at + 4 : at + 4 + length]
    if len(raw) != length:
        raise struct.error(f"the data of {what} runs past the end of the file")
    if flags & _ZSTD:
        raise RccError(f"{what} is zstd-compressed, which this reader does not decompress.")
    if flags & _ZLIB:
        (size,) = struct.unpack_from(">I", raw)
        out = zlib.decompress(raw[4:])
        if len(out) != size:
            raise RccError(f"{what} decompresses to {len(out)} bytes where the bundle says {size}.")
        return out
    return raw
