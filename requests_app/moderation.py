"""What the public may read of residents' words.

Residents type phone numbers and email addresses into descriptions ("call me on …") and
into their emailed replies. Every public surface — the status page, the nearby list, the
Open311 API, open-data exports, the public audit package — shows those masked, through
`ServiceRequest.public_description`, `Comment.public_text` and `HistoryEntry.public_note`,
which all come down to `public_text` here. Staff always see the original, which is never
changed: staff may only give it a public wording of its own.

Abusive words: a description or resident's comment that contains a word of the list
(MODERATION_BLOCKED_WORDS, comma-separated in the environment, `word*` for every word
starting so; unset means DEFAULT_BLOCKED_WORDS, `none` means no list) is shown to the
public as awaiting review until staff approve it or give it a public wording. The list is
applied when the text is shown, not when it arrives, so a word added later holds back old
reports too, and a word removed releases them, without rewriting anything.
"""

import re
from functools import lru_cache

from django.conf import settings
from django.utils.translation import gettext as _

# Deliberately short: profanity and slurs that no report needs in public. Cities add their
# own (and their languages') through MODERATION_BLOCKED_WORDS.
DEFAULT_BLOCKED_WORDS = (
    "fuck*",
    "motherfuck*",
    "shit*",
    "bullshit*",
    "cunt*",
    "asshole*",
    "bitch*",
    "bastard*",
    "dickhead*",
    "wanker*",
    "whore*",
    "retard*",
    "faggot*",
    "nigger*",
)

# --- Contact details -------------------------------------------------------------------------

# Not glued to a word, a decimal (42.3601…), a code such as CD-1234-5678 or a "+".
_BEFORE = r"(?<![\w.+-])"
# Not running on into a word or another group of digits (a date, a ZIP+4, a longer id).
_AFTER = r"(?!\w|[.-]\d)"

_EMAIL = re.compile(r"(?<![\w.%+-])[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.[^\W\d_]{2,}(?![\w-])")
_PHONES = [
    # North American: (555) 123-4567, 555.123.4567, 555 123 4567, 5551234567, +1 555 …,
    # 1-800-555-0199. Area codes never start with 0 or 1.
    re.compile(
        _BEFORE + r"(?:\+?1[\s.-]?)?(?:\([2-9]\d{2}\)[\s.-]?|[2-9]\d{2}[\s.-]?)"
        r"\d{3}[\s.-]?\d{4}" + _AFTER
    ),
    # International, written with its country code: +44 20 7946 0958, +33 1 23 45 67 89.
    re.compile(_BEFORE + r"\+\d{1,3}(?:[\s.-]?\(?\d{1,5}\)?){2,6}" + _AFTER),
    # National numbers with a trunk 0: 020 7946 0958, 07700 900123, (030) 1234 5678. The
    # separator after the trunk code keeps ZIP+4 codes (02139-4307) out.
    re.compile(_BEFORE + r"\(?0\d{1,4}\)?[\s.-]\d{3,4}[\s.-]?\d{3,4}" + _AFTER),
    # A local seven-digit number needs its separator, so that 2024 1234 stays two numbers.
    re.compile(_BEFORE + r"[2-9]\d{2}[.-]\d{4}" + _AFTER),
]
# How many digits a phone number has, whatever its punctuation.
_MIN_DIGITS, _MAX_DIGITS = 7, 15


def _digits(text: str) -> int:
    return sum(map(str.isdigit, text))  # map keeps the loop in C: this runs on every feed row


def mask_contact_details(text: str) -> str:
    """`text` with email addresses and phone numbers replaced by a placeholder."""
    if not text:
        return text or ""
    # The placeholders are translated only when something is hidden: most texts have
    # nothing to mask, and a feed masks a thousand of them.
    if "@" in text:
        text = _EMAIL.sub(lambda match: _("[email address hidden]"), text)
    if _digits(text) < _MIN_DIGITS:
        return text

    def phone(match):
        found = match.group(0)
        if _MIN_DIGITS <= _digits(found) <= _MAX_DIGITS:
            return _("[phone number hidden]")
        return found

    for pattern in _PHONES:
        text = pattern.sub(phone, text)
    return text


# --- Abusive words ---------------------------------------------------------------------------


def blocked_words() -> tuple[str, ...]:
    configured = getattr(settings, "MODERATION_BLOCKED_WORDS", None)
    if configured is None:
        configured = DEFAULT_BLOCKED_WORDS
    elif isinstance(configured, str):
        configured = configured.split(",")
    return _normalised(tuple(configured))


@lru_cache(maxsize=16)
def _normalised(configured: tuple[str, ...]) -> tuple[str, ...]:
    # Read on every public text (a feed shows a thousand): worked out once per list.
    words = tuple(w.strip().lower() for w in configured if w and w.strip())
    return () if words == ("none",) else words


@lru_cache(maxsize=16)
def _pattern_for(words: tuple[str, ...]) -> str | None:
    if not words:
        return None
    alternatives = [
        re.escape(word.rstrip("*")) + ("[a-zA-Z0-9]*" if word.endswith("*") else "")
        for word in words
        if word.rstrip("*")
    ]
    if not alternatives:
        return None
    # ASCII classes rather than \b or \w: the same pattern runs in Python and as
    # PostgreSQL's `~*` / SQLite's REGEXP (the admin's "awaiting review" filter), and the
    # two must agree on what is held back.
    return r"(^|[^a-zA-Z0-9])(" + "|".join(alternatives) + r")([^a-zA-Z0-9]|$)"


def blocked_pattern() -> str | None:
    """The word list as one case-insensitive regular expression (None without a list)."""
    return _pattern_for(blocked_words())


@lru_cache(maxsize=16)
def _compiled(pattern: str):
    return re.compile(pattern, re.IGNORECASE)


def blocked_word_in(text: str) -> str | None:
    """The first listed word in `text`, as written there, or None."""
    pattern = blocked_pattern()
    if not pattern or not text:
        return None
    match = _compiled(pattern).search(text)
    return match.group(2) if match else None


def needs_review(text: str, *, override: str = "", approved: bool = False) -> bool:
    return not override and not approved and blocked_word_in(text) is not None


def public_text(
    text: str, *, override: str = "", approved: bool = False, review: bool = True, kind="text"
) -> str:
    """What the public sees of a resident's `text`.

    `override` is the public wording staff gave it; `approved` means staff let it through as
    written; `review=False` skips the word list (for text staff wrote themselves). Contact
    details are masked in every case, the staff's wording included.
    """
    if override:
        return mask_contact_details(override)
    if review and needs_review(text, approved=approved):
        if kind == "comment":
            return _("This comment is awaiting review.")
        return _("This description is awaiting review.")
    return mask_contact_details(text)


# --- Photos ----------------------------------------------------------------------------------


def hold_photos_from_unverified() -> bool:
    """Whether residents' photos wait for staff before the public sees them."""
    return bool(getattr(settings, "MODERATION_HOLD_PHOTOS_FROM_UNVERIFIED", False))
