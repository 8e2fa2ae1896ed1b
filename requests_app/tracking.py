"""Public tracking numbers such as CD-7K4M-9Q2X.

Random, not sequential: a number reveals nothing about volume and neighbours cannot be
enumerated. Letters and digits that are easy to confuse when read over the phone (0/O,
1/I/L, U/V) are left out.
"""

import re
import secrets

ALPHABET = "23456789ABCDEFGHJKMNPQRSTWXYZ"
PREFIX = "CD"
_SHAPE = re.compile(rf"^{PREFIX}-[{ALPHABET}]{{4}}-[{ALPHABET}]{{4}}$")
_SEPARATORS = re.compile(r"[\s\-_.\u2010-\u2015\u2212]")


def new_tracking_number() -> str:
    chars = "".join(secrets.choice(ALPHABET) for _ in range(8))
    return f"{PREFIX}-{chars[:4]}-{chars[4:]}"


def normalize_tracking_number(text: str) -> str | None:
    """What a resident typed ("cd 7k4m9q2x", "7K4M-9Q2X") as a canonical number, or None."""
    # Dashes pasted from email or a word processor are often U+2010..U+2015 or U+2212.
    compact = _SEPARATORS.sub("", (text or "").upper())
    # Only a 10-character entry carries the prefix: "CD7K9Q2X" is the number CD-CD7K-9Q2X
    # typed without it, not a short one.
    if len(compact) == 8 + len(PREFIX):
        compact = compact.removeprefix(PREFIX)
    if len(compact) != 8:
        return None
    candidate = f"{PREFIX}-{compact[:4]}-{compact[4:]}"
    return candidate if _SHAPE.match(candidate) else None
