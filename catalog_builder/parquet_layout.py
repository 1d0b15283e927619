"""Where the column chunks of a Parquet file lie: the search columns of every row group first.

A Parquet writer stores row group after row group, each row group's column chunks in schema
order. A label search reads two small columns (a label mask and the id) of *every* row group, so
in that layout it needs one range request per row group (37 for the full archive), each paying
the store's round trip. Nothing in the format requires that order: a column chunk is found by
the absolute offsets in the footer (``ColumnMetaData.data_page_offset`` /
``dictionary_page_offset``), never by its position. :func:`gather_columns` moves the chunks of
chosen groups of columns, for all row groups, to the start of the file (group by group, row
group by row group within a group), so that the columns a search filters on are one contiguous
run that one or a few requests fetch; the other columns follow, row group by row group, as the
writer stored them. The schema, row groups, pages, statistics and every value stay as they were:
only chunk positions and the footer offsets that point at them change, so every reader
(pyarrow, DuckDB, parquet-rs / stac-geoparquet) reads the same table.

The footer is Thrift (compact protocol). It is decoded into a generic tree that encodes back to
the very same bytes (checked before anything is changed), and only these fields are rewritten:
``RowGroup.file_offset`` and, per column chunk, ``ColumnChunk.file_offset`` (when it points into
the chunk) and ``ColumnMetaData.data_page_offset`` / ``index_page_offset`` /
``dictionary_page_offset``. Files this cannot rewrite safely (encrypted footers, page indexes or
bloom filters, which hold offsets of their own, chunks in another file, bytes between chunks)
are refused with :class:`LayoutError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MAGIC = b"PAR1"

# Thrift compact protocol types
_STOP, _TRUE, _FALSE, _BYTE, _I16, _I32, _I64, _DOUBLE, _BINARY, _LIST, _SET, _MAP, _STRUCT = range(13)

# Field ids (parquet.thrift)
_FMD_ROW_GROUPS = 4
_RG_COLUMNS, _RG_FILE_OFFSET = 1, 5
_CC_FILE_PATH, _CC_FILE_OFFSET, _CC_META = 1, 2, 3
_CC_OFFSET_INDEX, _CC_COLUMN_INDEX, _CC_CRYPTO, _CC_ENCRYPTED = 4, 6, 8, 9
_CMD_PATH, _CMD_COMPRESSED = 3, 7
_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE, _CMD_BLOOM = 9, 10, 11, 14


class LayoutError(ValueError):
    """A Parquet file whose chunks :func:`gather_columns` will not move (the reason says why)."""


# -----------------------------------------------------------------------------------------------
# Thrift compact protocol: a lossless tree
# -----------------------------------------------------------------------------------------------
#
# A struct is a list of [field id, compact type, value]; a list or set is (element type, items);
# a map is (key type, value type, [(key, value)]); booleans that live in a field header have the
# value None (their type says true or false); other scalars are ints, and doubles / binaries bytes.


class _Reader:
    def __init__(self, data: bytes, pos: int = 0) -> None:
        self.data = data
        self.pos = pos

    def byte(self) -> int:
        b = self.data[self.pos]
        self.pos += 1
        return b

    def varint(self) -> int:
        shift = result = 0
        while True:
            b = self.byte()
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7
            if shift > 70:
                raise LayoutError("bad varint in the Parquet footer")

    def zigzag(self) -> int:
        n = self.varint()
        return (n >> 1) ^ -(n & 1)

    def value(self, ctype: int) -> Any:
        if ctype == _BYTE:
            return self.byte()
        if ctype in (_I16, _I32, _I64):
            return self.zigzag()
        if ctype == _DOUBLE:
            out = self.data[self.pos:self.pos + 8]
            self.pos += 8
            return out
        if ctype == _BINARY:
            n = self.varint()
            out = self.data[self.pos:self.pos + n]
            self.pos += n
            return out
        if ctype in (_LIST, _SET):
            head = self.byte()
            size, etype = head >> 4, head & 0x0F
            if size == 15:
                size = self.varint()
            items = [self.byte() if etype in (_TRUE, _FALSE) else self.value(etype) for _ in range(size)]
            return (etype, items)
        if ctype == _MAP:
            size = self.varint()
            if not size:
                return (0, 0, [])
            kv = self.byte()
            ktype, vtype = kv >> 4, kv & 0x0F
            return (ktype, vtype, [(self.value(ktype), self.value(vtype)) for _ in range(size)])
        if ctype == _STRUCT:
            return self.struct()
        raise LayoutError(f"unknown Thrift type {ctype} in the Parquet footer")

    def struct(self) -> list[list[Any]]:
        fields: list[list[Any]] = []
        last = 0
        while True:
            head = self.byte()
            if head == _STOP:
                return fields
            ctype, delta = head & 0x0F, head >> 4
            fid = last + delta if delta else self.zigzag()
            last = fid
            fields.append([fid, ctype, None if ctype in (_TRUE, _FALSE) else self.value(ctype)])


class _Writer:
    def __init__(self) -> None:
        self.out = bytearray()

    def varint(self, n: int) -> None:
        while True:
            if n < 0x80:
                self.out.append(n)
                return
            self.out.append((n & 0x7F) | 0x80)
            n >>= 7

    def zigzag(self, n: int) -> None:
        self.varint((n << 1) ^ (n >> 63))

    def value(self, ctype: int, v: Any) -> None:
        if ctype == _BYTE:
            self.out.append(v)
        elif ctype in (_I16, _I32, _I64):
            self.zigzag(v)
        elif ctype == _DOUBLE:
            self.out += v
        elif ctype == _BINARY:
            self.varint(len(v))
            self.out += v
        elif ctype in (_LIST, _SET):
            etype, items = v
            if len(items) < 15:
                self.out.append(len(items) << 4 | etype)
            else:
                self.out.append(0xF0 | etype)
                self.varint(len(items))
            for item in items:
                if etype in (_TRUE, _FALSE):
                    self.out.append(item)
                else:
                    self.value(etype, item)
        elif ctype == _MAP:
            ktype, vtype, items = v
            self.varint(len(items))
            if items:
                self.out.append(ktype << 4 | vtype)
                for key, val in items:
                    self.value(ktype, key)
                    self.value(vtype, val)
        elif ctype == _STRUCT:
            self.struct(v)
        else:  # pragma: no cover - the reader refuses unknown types first
            raise LayoutError(f"unknown Thrift type {ctype}")

    def struct(self, fields: list[list[Any]]) -> None:
        last = 0
        for fid, ctype, v in fields:
            delta = fid - last
            if 0 < delta <= 15:
                self.out.append(delta << 4 | ctype)
            else:
                self.out.append(ctype)
                self.zigzag(fid)
            last = fid
            if ctype not in (_TRUE, _FALSE):
                self.value(ctype, v)
        self.out.append(_STOP)


def decode_footer(footer: bytes) -> list[list[Any]]:
    """The ``FileMetaData`` struct of a Parquet footer as a lossless tree (see :func:`encode_footer`)."""
    reader = _Reader(footer)
    try:
        tree = reader.struct()
    except IndexError:
        raise LayoutError("truncated Parquet footer") from None
    if reader.pos != len(footer):
        raise LayoutError("bytes after the Parquet footer's FileMetaData")
    return tree


def encode_footer(tree: list[list[Any]]) -> bytes:
    """Thrift compact bytes of a tree from :func:`decode_footer`."""
    writer = _Writer()
    writer.struct(tree)
    return bytes(writer.out)


def _field(fields: list[list[Any]], fid: int) -> list[Any] | None:
    for f in fields:
        if f[0] == fid:
            return f
    return None


def _get(fields: list[list[Any]], fid: int) -> Any:
    f = _field(fields, fid)
    return None if f is None else f[2]


def _set(fields: list[list[Any]], fid: int, value: int) -> None:
    f = _field(fields, fid)
    if f is None:
        raise LayoutError(f"field {fid} missing")  # pragma: no cover - only set where present
    f[2] = value


# -----------------------------------------------------------------------------------------------
# Moving chunks
# -----------------------------------------------------------------------------------------------


def _footer_of(data: bytes) -> tuple[bytes, int]:
    if len(data) < 12 or data[:4] != MAGIC or data[-4:] != MAGIC:
        raise LayoutError("not a plain Parquet file (an encrypted footer, or not Parquet)")
    length = int.from_bytes(data[-8:-4], "little")
    start = len(data) - 8 - length
    if start < 4:
        raise LayoutError("Parquet footer length out of range")
    return data[start:len(data) - 8], start


def gather_columns(data: bytes, groups: Sequence[Sequence[str]]) -> bytes:
    """``data`` (Parquet bytes) with the chunks of each group of top-level columns moved to the
    start of the file: group by group, each group's chunks row group by row group (in schema
    order within a row group); then every other chunk, row group by row group, in its order.

    Names that are not columns of the file are ignored. A column may be in one group only.
    Raises :class:`LayoutError` where the file cannot be rewritten safely; the result holds
    exactly the same table.
    """
    rank: dict[str, int] = {}
    for g, names in enumerate(groups):
        for name in names:
            if name in rank and rank[name] != g:
                raise LayoutError(f"column {name!r} is in two groups")
            rank[name] = g
    footer, footer_start = _footer_of(data)
    tree = decode_footer(footer)
    if encode_footer(tree) != footer:
        raise LayoutError("the Parquet footer does not encode back to the same bytes")
    row_groups: list[Any] = (_get(tree, _FMD_ROW_GROUPS) or (None, []))[1]

    # Every chunk: (original start, length, group rank or None, row group, its ColumnChunk fields)
    chunks: list[tuple[int, int, int | None, int, list[list[Any]]]] = []
    for r, rg in enumerate(row_groups):
        for cc in (_get(rg, _RG_COLUMNS) or (None, []))[1]:
            for fid, what in ((_CC_FILE_PATH, "chunks in another file"), (_CC_OFFSET_INDEX, "a page index"),
                              (_CC_COLUMN_INDEX, "a page index"), (_CC_CRYPTO, "encrypted columns"),
                              (_CC_ENCRYPTED, "encrypted columns")):
                if _field(cc, fid) is not None:
                    raise LayoutError(f"the file has {what}")
            meta = _get(cc, _CC_META)
            if meta is None:
                raise LayoutError("a column chunk without metadata")
            if _field(meta, _CMD_BLOOM) is not None:
                raise LayoutError("the file has bloom filters")
            path: list[bytes] = (_get(meta, _CMD_PATH) or (None, []))[1]
            top = path[0].decode() if path else ""
            data_page = _get(meta, _CMD_DATA_PAGE)
            dictionary = _get(meta, _CMD_DICT_PAGE)
            start = dictionary if dictionary is not None and 0 < dictionary < data_page else data_page
            chunks.append((start, _get(meta, _CMD_COMPRESSED), rank.get(top), r, cc))

    # The chunks must tile the bytes between the magic and the footer: nothing else to carry.
    pos = len(MAGIC)
    for start, length, *_ in sorted(chunks, key=lambda c: c[0]):
        if start != pos or length <= 0:
            raise LayoutError(f"bytes between column chunks at offset {pos} (a layout this cannot move)")
        pos += length
    if pos != footer_start:
        raise LayoutError(f"bytes between the last column chunk and the footer ({footer_start - pos})")

    # Written order: each group's chunks (row group by row group), then the rest by row group.
    ordered = sorted(chunks, key=lambda c: (len(groups), c[3], c[0]) if c[2] is None else (c[2], c[3], c[0]))
    out = bytearray(MAGIC)
    first_of_group: dict[int, int] = {}
    for start, length, _, r, cc in ordered:
        delta = len(out) - start
        out += data[start:start + length]
        meta = _get(cc, _CC_META)
        for fid in (_CMD_DATA_PAGE, _CMD_INDEX_PAGE, _CMD_DICT_PAGE):
            value = _get(meta, fid)
            if value is not None and value > 0:
                _set(meta, fid, value + delta)
        offset = _get(cc, _CC_FILE_OFFSET)
        if offset and start <= offset <= start + length:
            _set(cc, _CC_FILE_OFFSET, offset + delta)
        first_of_group[r] = min(first_of_group.get(r, len(out)), start + delta)
    for r, rg in enumerate(row_groups):
        if _field(rg, _RG_FILE_OFFSET) is not None and r in first_of_group:
            _set(rg, _RG_FILE_OFFSET, first_of_group[r])
    new_footer = encode_footer(tree)
    out += new_footer
    out += len(new_footer).to_bytes(4, "little")
    out += MAGIC
    return bytes(out)


def column_runs(data: bytes) -> list[tuple[int, int, str, int]]:
    """``(start, end, top-level column, row group)`` of every chunk, in file order (tests, tools)."""
    footer, _ = _footer_of(data)
    out = []
    for r, rg in enumerate((_get(decode_footer(footer), _FMD_ROW_GROUPS) or (None, []))[1]):
        for cc in (_get(rg, _RG_COLUMNS) or (None, []))[1]:
            meta = _get(cc, _CC_META)
            data_page, dictionary = _get(meta, _CMD_DATA_PAGE), _get(meta, _CMD_DICT_PAGE)
            start = dictionary if dictionary is not None and 0 < dictionary < data_page else data_page
            out.append((start, start + _get(meta, _CMD_COMPRESSED), _get(meta, _CMD_PATH)[1][0].decode(), r))
    return sorted(out)


__all__ = ["LayoutError", "column_runs", "decode_footer", "encode_footer", "gather_columns"]
