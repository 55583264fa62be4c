"""File names for names chosen by users (targets, tasks): any length, any characters.

The rule is ``layout.disk_name``, the one spelling of a name on disk: short
lower-case plain names stay as they are (``uksouth``), others become a
readable ASCII prefix plus a hash of the whole name (``prod_eu~7394b101994b``),
which keeps distinct names distinct, also on file systems that fold case or
normalize Unicode.
"""

from __future__ import annotations

from fleetrun.layout import MAX_NAME_BYTES as MAX_BYTES
from fleetrun.layout import disk_name as file_name

__all__ = ["MAX_BYTES", "file_name"]
