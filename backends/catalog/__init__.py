"""The model catalog: hosted models (through litellm, or directly when OpenAI-compatible).

Public surface::

    CatalogEntryConfig     the ``catalog:`` entry schema (config.py)
    CatalogBackend         the backend for routes ``catalog:<name>`` (backend.py)
    TokenPrices, effective_prices
                           an entry's per-token prices as Decimals (pricing.py)
    UpstreamRateLimited    the provider's rate limit was hit (429, retryable;
                           re-exported from tollway.errors)

Importing this package does not import litellm.
"""

from backends.catalog.backend import CatalogBackend
from backends.catalog.config import CatalogEntryConfig, CatalogPrice, CatalogTimeouts
from backends.catalog.pricing import TokenPrices, effective_prices
from tollway.errors import UpstreamRateLimited

__all__ = [
    "CatalogBackend",
    "CatalogEntryConfig",
    "CatalogPrice",
    "CatalogTimeouts",
    "TokenPrices",
    "UpstreamRateLimited",
    "effective_prices",
]
