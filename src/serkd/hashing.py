"""One content hash for JSON-like values (configs, parameters, identities): the keys of caches and results."""

from __future__ import annotations

import hashlib
import json
from typing import Any


def stable_hash(value: Any, length: int = 16) -> str:
    """SHA-1 of ``value`` as canonical JSON (sorted keys; non-JSON values by ``str``), first ``length`` hex digits.

    Equal values give equal hashes in any process and on any machine, so a hash can name a cache entry or
    decide whether a finished result may be reused."""
    return hashlib.sha1(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:length]
