"""Arabic number words in Modern Standard Arabic, for the silma engine's pre-normalizer.

num2words' Arabic is not used: it spaces the conjunction ("واحد و عشرون"), reads decimals with
a Latin comma and gets ordinals past twenty wrong ("إحدى و عشرون" for the 21st). Forms here:
- cardinals in the nominative (standing alone) or the genitive (after a preposition or month,
  as in dates: "ألفين وستة وعشرين"), and feminine units for counting feminine nouns (دقيقة);
- definite ordinals up to 99, masculine (days of the month) or feminine (hours: الساعة الثالثة);
- digits one by one (phone numbers).
Case endings beyond the dual and the sound plural are not written: the diacritizer marks them.
"""

from __future__ import annotations

_UNITS_M = ("", "واحد", "اثنان", "ثلاثة", "أربعة", "خمسة", "ستة", "سبعة", "ثمانية", "تسعة")
# Feminine counted nouns take the short form of 3-9 (gender polarity): ثلاث دقائق.
_UNITS_F = ("", "واحدة", "اثنتان", "ثلاث", "أربع", "خمس", "ست", "سبع", "ثماني", "تسع")
_TENS = ("", "عشرة", "عشرون", "ثلاثون", "أربعون", "خمسون", "ستون", "سبعون", "ثمانون", "تسعون")
_HUNDREDS = (
    "", "مئة", "مئتان", "ثلاثمئة", "أربعمئة", "خمسمئة", "ستمئة", "سبعمئة", "ثمانمئة", "تسعمئة"
)
DIGITS = ("صفر", "واحد", "اثنان", "ثلاثة", "أربعة", "خمسة", "ستة", "سبعة", "ثمانية", "تسعة")
# (singular, plural after 3-10, accusative singular after 11-99): ألف / آلاف / ألفًا
_SCALES = (
    (10**9, ("مليار", "مليارات", "مليارًا", "ملياران")),
    (10**6, ("مليون", "ملايين", "مليونًا", "مليونان")),
    (10**3, ("ألف", "آلاف", "ألفًا", "ألفان")),
)
_ORDINALS_M = (
    "", "الأول", "الثاني", "الثالث", "الرابع", "الخامس", "السادس", "السابع", "الثامن", "التاسع",
)
_ORDINALS_F = (
    "", "الأولى", "الثانية", "الثالثة", "الرابعة", "الخامسة", "السادسة", "السابعة", "الثامنة",
    "التاسعة",
)
MAX_CARDINAL = 10**12 - 1
_DUALS = ("اثنان", "اثنتان", "مئتان", *(forms[3] for _, forms in _SCALES))
_INFLECTED = {
    **{word: word[:-2] + "ين" for word in (*_TENS[2:], *_DUALS)},
    "اثنا": "اثني",
    "اثنتا": "اثنتي",
}


def _genitive(words: str) -> str:
    """After a preposition or a month the duals and the tens change their ending (-ان/-ون to
    -ين): "ألفين وستة وعشرين"."""
    out = []
    for word in words.split(" "):
        conjunction = "و" if word[1:] in _INFLECTED else ""
        bare = word[len(conjunction):]
        out.append(conjunction + _INFLECTED.get(bare, bare))
    return " ".join(out)


def _below_hundred(n: int, feminine: bool) -> str:
    units = _UNITS_F if feminine else _UNITS_M
    if n < 10:
        return units[n]
    if n == 10:
        return "عشر" if feminine else "عشرة"
    if n < 20:
        ten = "عشرة" if feminine else "عشر"  # the teens flip the ten's gender
        if n == 11:
            return f"{'إحدى' if feminine else 'أحد'} {ten}"
        if n == 12:
            return f"{'اثنتا' if feminine else 'اثنا'} {ten}"
        return f"{units[n - 10]} {ten}"
    tens, unit = divmod(n, 10)
    return _TENS[tens] if unit == 0 else f"{units[unit]} و{_TENS[tens]}"


def _below_thousand(n: int, feminine: bool) -> str:
    hundreds, rest = divmod(n, 100)
    parts = [_HUNDREDS[hundreds]] if hundreds else []
    if rest:
        parts.append(_below_hundred(rest, feminine))
    return " و".join(parts)


def _scaled(count: int, forms: tuple[str, str, str, str]) -> str:
    singular, plural, accusative, dual = forms
    if count == 1:
        return singular
    if count == 2:
        return dual
    last_two = count % 100
    counted = _below_thousand(count, feminine=False)
    if 3 <= last_two <= 10:
        return f"{counted} {plural}"
    if last_two >= 11:
        return f"{counted} {accusative}"
    return f"{counted} {singular}"  # مئة ألف, مئتا ألف is read as مئتان ألف in speech


def cardinal(n: int, *, feminine: bool = False, genitive: bool = False) -> str:
    """0 <= n <= MAX_CARDINAL, as words."""
    if not 0 <= n <= MAX_CARDINAL:
        raise ValueError(f"{n} is outside 0..{MAX_CARDINAL}")
    if n == 0:
        return DIGITS[0]
    parts: list[str] = []
    rest = n
    for scale, forms in _SCALES:
        count, rest = divmod(rest, scale)
        if count:
            parts.append(_scaled(count, forms))
    if rest:
        parts.append(_below_thousand(rest, feminine))
    words = " و".join(parts)
    return _genitive(words) if genitive else words


def ordinal(n: int, *, feminine: bool = False) -> str:
    """The definite ordinal for 1..99 (الثالث, الحادية عشرة, الخامس والعشرون)."""
    if not 1 <= n <= 99:
        raise ValueError(f"no ordinal for {n}: expected 1..99")
    ordinals = _ORDINALS_F if feminine else _ORDINALS_M
    if n < 10:
        return ordinals[n]
    if n == 10:
        return "العاشرة" if feminine else "العاشر"
    tens, unit = divmod(n, 10)
    first = ("الحادية" if feminine else "الحادي") if unit == 1 else ordinals[unit]
    if tens == 1:
        return f"{first} {'عشرة' if feminine else 'عشر'}"
    ten = "ال" + _TENS[tens]
    return ten if unit == 0 else f"{first} و{ten}"


def digits(run: str) -> str:
    """Each digit of `run` (ASCII digits only) as a word."""
    return " ".join(DIGITS[int(d)] for d in run)
