"""asyncssh, imported in one place for the SSH modules, without cryptography's DSA noise.

asyncssh's modules name cryptography's DSA classes when they are imported,
and cryptography (43 and later) warns with a ``CryptographyDeprecationWarning``
on each such access: about ten lines on stderr for every command that uses
SSH. They concern asyncssh's own code, not anything a plan does, so exactly
those are ignored: that category, raised from asyncssh's modules. Every other
warning (cryptography's about other callers, asyncssh's own, any other
library's) is left as Python's settings say.

The SSH modules import ``asyncssh`` from here, never directly, so the filter
is in place before asyncssh's first import.
"""

from __future__ import annotations

import warnings

try:
    from cryptography.utils import CryptographyDeprecationWarning
except ImportError:  # pragma: no cover - asyncssh requires cryptography
    pass
else:
    warnings.filterwarnings(
        "ignore", category=CryptographyDeprecationWarning, module=r"asyncssh(\.|$)"
    )

import asyncssh

__all__ = ["asyncssh"]
