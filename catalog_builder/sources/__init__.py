"""Release readers: raw BigEarthNet folders -> :class:`~catalog_builder.records.PairRecord`.

One reader per release, each behind the :class:`ReleaseSource` protocol: v1 (a JSON per patch)
today; v2 (``metadata.parquet``, nested folders, reference maps) fits beside it.
"""

from catalog_builder.sources.base import ReleaseSource, band_byte_limit, decode_band, open_source
from catalog_builder.sources.v1 import V1Source

__all__ = ["ReleaseSource", "V1Source", "band_byte_limit", "decode_band", "open_source"]
