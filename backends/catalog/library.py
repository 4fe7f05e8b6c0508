"""Importing litellm, lazily and offline.

litellm is heavy to import (seconds), so nothing imports it at module level: a
gateway without catalog entries never loads it. When it is loaded, it is told
to use the files it ships (cost map, Anthropic beta headers, tokenizers)
instead of fetching them over the network, which it would otherwise try at
import and on first use.
"""

from __future__ import annotations

import logging
import os
import warnings
from types import ModuleType

#: Set before litellm is imported; each makes litellm use its bundled copy.
OFFLINE_ENVIRONMENT = {
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_OFFLINE_MODE": "true",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
}

#: litellm's types trip this pydantic warning; it says nothing about our use.
_READONLY_WARNING = r"Item '.*' on TypedDict class '.*' is using the `ReadOnly` qualifier"


def load_litellm() -> ModuleType:
    """Import litellm configured for offline use and return the module."""
    # litellm reads these from the process environment, at import and later.
    os.environ.update(OFFLINE_ENVIRONMENT)
    import litellm

    # Library settings, not request state: no console banners, no tokenizer downloads.
    litellm.suppress_debug_info = True
    litellm.disable_hf_tokenizer_download = True
    litellm.telemetry = False
    # litellm puts its own text handler on its loggers at import; drop it so its
    # records reach the host's handlers (the gateway's JSON log) like any library's.
    for name in ("LiteLLM", "LiteLLM Router", "LiteLLM Proxy"):
        logger = logging.getLogger(name)
        for handler in list(logger.handlers):
            logger.removeHandler(handler)
        logger.propagate = True
    # pydantic warns once per type when litellm first builds a schema mid-request.
    warnings.filterwarnings("ignore", message=_READONLY_WARNING, category=UserWarning)
    return litellm
