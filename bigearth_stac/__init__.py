"""bigearth_stac: search and read BigEarthNet STAC catalogs (local, http(s), s3)."""

from __future__ import annotations

from typing import Any

# Re-exports, imported on first use so that ``import bigearth_stac.vocab`` stays light.
_LAZY = {
    "Catalog": "bigearth_stac.catalog",
    "SearchResult": "bigearth_stac.search",
    "BigEarthNetStream": "bigearth_stac.torch_dataset",
    "SampleError": "bigearth_stac.torch_dataset",
    "StreamOptions": "bigearth_stac.torch_dataset",
    "DecodeError": "bigearth_stac.decode",
    "ShapeMismatchError": "bigearth_stac.decode",
    "to_xarray": "bigearth_stac.xarray_view",
    "mosaic": "bigearth_stac.xarray_view",
    "Fetcher": "bigearth_stac.fetch",
    "FetchError": "bigearth_stac.fetch",
    "StorageSettings": "bigearth_stac.settings",
    "ApiCatalog": "bigearth_stac.api",
    "ApiSearchResult": "bigearth_stac.api",
    "is_stac_api": "bigearth_stac.api",
    "Scope": "bigearth_stac.hrefs",
    "HrefError": "bigearth_stac.hrefs",
    "CatalogError": "bigearth_stac.catalog",
    "QueryError": "bigearth_stac._predicates",
    "LabelQueryError": "bigearth_stac._predicates",
    "UnsupportedOperator": "bigearth_stac.cql2sql",
    "SearchQuery": "bigearth_stac.search",
    "UnknownLabelError": "bigearth_stac.vocab",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'bigearth_stac' has no attribute {name!r}")


__all__ = ["Catalog", "SearchResult", "BigEarthNetStream", "SampleError", "to_xarray", "mosaic", "Fetcher",
           "FetchError", "StorageSettings", "Scope", "HrefError", "CatalogError", "QueryError",
           "UnknownLabelError", "StreamOptions", "DecodeError", "ShapeMismatchError",
           "LabelQueryError", "UnsupportedOperator", "SearchQuery", "ApiCatalog", "ApiSearchResult", "is_stac_api"]
