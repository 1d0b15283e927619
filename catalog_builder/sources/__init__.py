"""Release readers: raw BigEarthNet folders -> :class:`~catalog_builder.records.PairRecord`.

One reader per release, each behind the :class:`ReleaseSource` protocol: v1 (a JSON per patch,
:class:`V1Source`) and v2 (``metadata.parquet``, nested folders, reference maps,
:class:`V2Source`). Raw GeoTIFFs are decoded by :mod:`~catalog_builder.sources.rawtiff`.
"""

from catalog_builder.sources.base import ReleaseSource, band_byte_limit, decode_band, open_source
from catalog_builder.sources.v1 import V1Source
from catalog_builder.sources.v2 import V2Metadata, V2Source

__all__ = ["ReleaseSource", "V1Source", "V2Metadata", "V2Source", "band_byte_limit", "decode_band", "open_source"]
