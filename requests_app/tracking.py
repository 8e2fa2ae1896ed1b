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


def new_tracking_number() -> str:
    chars = "".join(secrets.choice(ALPHABET) for _ in range(8))
    return f"{PREFIX}-{chars[:4]}-{chars[4:]}"


def normalize_tracking_number(text: str) -> str | None:
    """What a resident typed ("cd 7k4m9q2x", "7K4M-9Q2X") as a canonical number, or None."""
    compact = re.sub(r"[\s\-_.]", "", (text or "").upper())
    compact = compact.removeprefix(PREFIX)
    if len(compact) != 8:
        return None
    candidate = f"{PREFIX}-{compact[:4]}-{compact[4:]}"
    return candidate if _SHAPE.match(candidate) else None
