"""Display width of ad text, SMS segments and characters ad platforms refuse.

Width follows docs/specs/ad_text_limits.md: a character whose Unicode East Asian
Width is W (wide) or F (fullwidth) counts 2, any other counts 1. Google counts each
character of a double-width language as 2, so a 30-wide headline holds 15 Chinese
characters; counting `len()` would let a Chinese headline run twice too long.
"""

from __future__ import annotations

import re
import unicodedata

# The GSM 03.38 basic alphabet plus its extension table (extension chars cost 2 septets).
_GSM_BASIC = set(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
_GSM_EXTENDED = set("^{}\\[~]|€\f")

# Pictographs, dingbats, flags, variation selectors and joiners used in emoji sequences.
EMOJI = re.compile(
    "[\U0001f000-\U0001faff\U00002600-\U000027bf\U0001f1e6-\U0001f1ff"
    "\u2b00-\u2bff\u2300-\u23ff\ufe0f\u200d\u20e3]"
)


def char_width(char: str) -> int:
    return 2 if unicodedata.east_asian_width(char) in ("W", "F") else 1


def text_width(text: str) -> int:
    """Width of `text` as the ad platforms count it (CJK 2, anything else 1)."""
    return sum(char_width(char) for char in text)


def has_emoji(text: str) -> bool:
    return EMOJI.search(text) is not None


def sms_segments(text: str) -> tuple[int, str]:
    """(number of SMS parts, encoding): GSM-7 fits 160/153 per part, UCS-2 70/67.

    One Chinese character switches the whole message to UCS-2, which is why a Chinese
    SMS costs a second part after 70 characters, not 160.
    """
    if all(char in _GSM_BASIC or char in _GSM_EXTENDED for char in text):
        septets = sum(2 if char in _GSM_EXTENDED else 1 for char in text)
        return (1 if septets <= 160 else -(-septets // 153)), "GSM-7"
    # UCS-2 counts UTF-16 code units: characters outside the BMP (emoji) take two.
    units = len(text.encode("utf-16-le")) // 2
    return (1 if units <= 70 else -(-units // 67)), "UCS-2"
