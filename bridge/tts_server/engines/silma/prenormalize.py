"""Numbers the model would otherwise misread, written out as words before NeMo sees the text.

SILMA's model was trained on words: digits reach it as characters it says one by one or not at
all. silma-tts 1.0.5 relies on NeMo (nemo-text-processing 1.1.0), whose Arabic grammar reads
cardinals, decimals and currency but not times, dates, phone numbers or ordinals, and which is
an optional 1 GB extra here. This pass runs first, in both languages, so that these read the
same with or without NeMo:
- Arabic-Indic and Persian digits become ASCII digits (and the Arabic decimal, thousands and
  percent signs their Latin counterparts), so every rule below sees one kind of digit;
- times (15:45, 3:30 pm, 9am, الساعة 3:30 م): Arabic as feminine ordinal hours with the
  customary quarter, third and half ("الرابعة إلا ربعًا مساءً"), English as spoken on a clock;
- dates, numeric (2026-12-08; 08/12/2026, read day first in Arabic and month first in English
  unless a part over 12 decides) or with a month's name (December 8, 2026; 8 ديسمبر 2026);
- phone numbers digit by digit in the groups they were written in: anything starting with +,
  7 to 15 digits written in separated groups, a run of 7 or more starting with 0, or a bare
  run of 10 or more (no spoken amount is that long without thousands separators);
- numbers with two dots or more, versions mostly (2.5.1 -> two dot five dot one);
- ordinals (21st; الـ3 / ال3 -> الثالث).
With `cardinals` (set when NeMo is not installed) the remaining numbers, percentages and
$ € £ amounts are read too; otherwise they are left for NeMo, as upstream does.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from num2words import num2words

from bridge.tts_server.engines.silma import arabic_numbers as ar

_DIGIT_FOLD = str.maketrans(
    "٠١٢٣٤٥٦٧٨٩۰۱۲۳۴۵۶۷۸۹٫٬٪", "0123456789" "0123456789" ".,%"
)
MONTHS_EN = (
    "January", "February", "March", "April", "May", "June", "July", "August", "September",
    "October", "November", "December",
)
# The names read across the Gulf and Egypt, which SILMA's voices speak; Levantine names
# (كانون الأول, ...) are recognised in text but never produced.
MONTHS_AR = (
    "يناير", "فبراير", "مارس", "أبريل", "مايو", "يونيو", "يوليو", "أغسطس", "سبتمبر", "أكتوبر",
    "نوفمبر", "ديسمبر",
)
_MONTH_NAMES_AR = "|".join(
    (*MONTHS_AR, "إبريل", "يونيه", "يوليه", "كانون الثاني", "شباط", "آذار", "نيسان", "أيار",
     "حزيران", "تموز", "آب", "أيلول", "تشرين الأول", "تشرين الثاني", "كانون الأول")
)
_MONTH_NAMES_EN = "|".join((*MONTHS_EN, *(m[:3] + r"\.?" for m in MONTHS_EN), "Sept\\.?"))
_NOT_BEFORE = r"(?<![\d:.,/+-])"  # not the tail of a longer number, time or date
_NOT_AFTER = r"(?![\d:]|[.,/-]\d)"

# A marker's last dot is also the sentence's full stop unless the sentence goes on in lower case.
_MARKER = r"[ap]\.?m(?:\.(?=[ \t]*[a-z]))?"
_TIME = re.compile(
    _NOT_BEFORE + r"(\d{1,2}):([0-5]\d)"
    + rf"(?:\s*({_MARKER}|صباحًا|صباحا|مساءً|مساء|ص|م)(?!\w))?" + _NOT_AFTER,
    re.IGNORECASE,
)
_HOUR_ONLY_EN = re.compile(
    _NOT_BEFORE + rf"\b(\d{{1,2}})\s*({_MARKER})(?!\w)", re.IGNORECASE
)
_HOUR_AFTER_AR = re.compile(r"(الساعة)\s+(\d{1,2})" + _NOT_AFTER)
_ISO_DATE = re.compile(_NOT_BEFORE + r"(\d{4})-(\d{1,2})-(\d{1,2})" + _NOT_AFTER)
_NUMERIC_DATE = re.compile(_NOT_BEFORE + r"(\d{1,2})([/.-])(\d{1,2})\2(\d{4})" + _NOT_AFTER)
_NAMED_DATE_EN = re.compile(
    rf"\b({_MONTH_NAMES_EN})\s+(\d{{1,2}})(?:st|nd|rd|th)?\b(?:,?\s+(\d{{4}})\b)?"
    rf"|\b(?:the\s+)?(\d{{1,2}})(?:st|nd|rd|th)?\s+(?:of\s+)?({_MONTH_NAMES_EN})\b"
    rf"(?:,?\s+(\d{{4}})\b)?",
    re.IGNORECASE,
)
_NAMED_DATE_AR = re.compile(rf"(?<!\d)(\d{{1,2}})\s+({_MONTH_NAMES_AR})(?:\s+(\d{{4}}))?(?!\d)")
_PHONE_CANDIDATE = re.compile(r"(?<![\w.,])\+?\(?\d[\d \-.()]*\d\)?(?![\w]|[.,]\d)")
_PHONE_GROUP = re.compile(r"\d+")
_ORDINAL_EN = re.compile(r"(?<![\d.,])(\d{1,9})(st|nd|rd|th)\b", re.IGNORECASE)
_ORDINAL_AR = re.compile(r"\bالـ?(\d{1,2})(?!\d)")
_CURRENCY = re.compile(r"([$€£])\s?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d{1,2}))?(?![\d.,]\d)")
_PERCENT = re.compile(r"(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?\s?%")
_NUMBER = re.compile(r"(?<![\d.])(?:(?<![\w-])(-))?(\d{1,3}(?:,\d{3})+|\d+)(?:\.(\d+))?(?!\d|\.\d)")
_DOTTED = re.compile(r"(?<![\d.])\d+(?:\.\d+){2,}(?![\d.]\d)")  # versions, addresses: 2.5.1
_YEAR_EN = re.compile(r"1[1-9]\d\d|20\d\d")  # a bare number read as a year, as NeMo does
_CURRENCY_WORDS = {
    "$": ("dollar", "dollars", "cent", "cents", "دولار", "سنت"),
    "€": ("euro", "euros", "cent", "cents", "يورو", "سنت"),
    "£": ("pound", "pounds", "penny", "pence", "جنيه", "بنس"),
}
MAX_SPOKEN_INTEGER = ar.MAX_CARDINAL  # longer runs are read digit by digit


def prenormalize(text: str, language: str, *, cardinals: bool = False) -> str:
    """`language` is "ar" or "en", decided on the whole reply by the caller."""
    text = text.translate(_DIGIT_FOLD)
    arabic = language == "ar"
    for rule in _RULES_AR if arabic else _RULES_EN:
        text = rule(text)
    if cardinals:
        for rule in _NUMBERS["ar" if arabic else "en"]:
            text = rule(text)
    return text


# --- times -----------------------------------------------------------------------------------

def _period(marker: str | None) -> str | None:
    """"am" / "pm" from any spelling of the marker, or None."""
    if not marker:
        return None
    bare = marker.lower().replace(".", "")
    if bare in ("am", "ص", "صباحا", "صباحًا"):
        return "am"
    return "pm"


def _clock(hour: int, minute: int, period: str | None) -> tuple[int, str | None] | None:
    """The 12-hour face and its period, or None when this is no time of day."""
    if minute > 59 or hour > 23:
        return None
    if hour == 0:
        return 12, "am"
    if hour > 12:  # a 24-hour time decides its own period, whatever marker follows it
        return hour - 12, "pm"
    return hour, period


def _time_en(match: re.Match[str]) -> str:
    hour, minute, marker = int(match[1]), int(match[2]), match[3]
    clock = _clock(hour, minute, _period(marker))
    if clock is None:
        return match[0]
    # English reads a 24-hour time as written ("fifteen forty-five"), except past midnight.
    period = clock[1] if marker or hour == 0 else None
    if period:
        hour = clock[0]
    words = str(num2words(hour))
    if minute == 0:
        words += "" if period else (" hundred" if hour > 12 else " o'clock")
    elif minute < 10:
        words += f" oh {num2words(minute)}"
    else:
        words += f" {num2words(minute)}"
    if period:
        words += " a m" if period == "am" else " p m"
    return words


def _hour_en(match: re.Match[str]) -> str:
    hour = int(match[1])
    if not 1 <= hour <= 12:
        return match[0]
    return f"{num2words(hour)} {'a m' if _period(match[2]) == 'am' else 'p m'}"


def _time_ar(match: re.Match[str]) -> str:
    clock = _clock(int(match[1]), int(match[2]), _period(match[3]))
    if clock is None:
        return match[0]
    hour, period = clock
    minute = int(match[2])
    if minute in (40, 45):  # "the next hour less a third / a quarter"
        hour = hour % 12 + 1
        words = f"{ar.ordinal(hour, feminine=True)} إلا {'ثلثًا' if minute == 40 else 'ربعًا'}"
    else:
        words = ar.ordinal(hour, feminine=True) + _minutes_ar(minute)
    if period:
        words += " صباحًا" if period == "am" else " مساءً"
    return words


def _minutes_ar(minute: int) -> str:
    if minute == 0:
        return ""
    if minute in (15, 20, 30):
        return {15: " والربع", 20: " والثلث", 30: " والنصف"}[minute]
    if minute == 1:
        return " ودقيقة"
    if minute == 2:
        return " ودقيقتان"
    noun = "دقائق" if minute <= 10 else "دقيقة"  # 3-10 count a plural, 11 and up a singular
    return f" و{ar.cardinal(minute, feminine=True)} {noun}"


def _hour_after_ar(match: re.Match[str]) -> str:
    hour = int(match[2])
    if not 1 <= hour <= 12:
        return match[0]
    return f"{match[1]} {ar.ordinal(hour, feminine=True)}"


# --- dates -----------------------------------------------------------------------------------

def _valid(day: int, month: int) -> bool:
    return 1 <= month <= 12 and 1 <= day <= 31


def _date_words(
    day: int, month: int, year: int | None, language: str, *, day_first: bool = False
) -> str:
    """Arabic always says the day first; English keeps the order it was written in."""
    if language == "ar":
        words = f"{ar.ordinal(day)} من {MONTHS_AR[month - 1]}"
        return words if year is None else f"{words} {ar.cardinal(year, genitive=True)}"
    day_words = num2words(day, to="ordinal")
    month_name = MONTHS_EN[month - 1]
    words = f"the {day_words} of {month_name}" if day_first else f"{month_name} {day_words}"
    return words if year is None else f"{words}, {num2words(year, to='year')}"


def _iso_date(language: str) -> Callable[[re.Match[str]], str]:
    def read(match: re.Match[str]) -> str:
        year, month, day = int(match[1]), int(match[2]), int(match[3])
        return _date_words(day, month, year, language) if _valid(day, month) else match[0]

    return read


def _numeric_date(language: str) -> Callable[[re.Match[str]], str]:
    def read(match: re.Match[str]) -> str:
        first, second, year = int(match[1]), int(match[3]), int(match[4])
        day_first = language == "ar"
        if first > 12:
            day_first = True
        elif second > 12:
            day_first = False
        day, month = (first, second) if day_first else (second, first)
        return _date_words(day, month, year, language) if _valid(day, month) else match[0]

    return read


def _month_number_en(name: str) -> int:
    prefix = name.rstrip(".")[:3].lower()
    return next(i for i, month in enumerate(MONTHS_EN, 1) if month[:3].lower() == prefix)


def _named_date_en(match: re.Match[str]) -> str:
    day_first = not match[1]
    name, day, year = (match[5], match[4], match[6]) if day_first else match.group(1, 2, 3)
    day_n = int(day)
    if not 1 <= day_n <= 31:
        return match[0]
    month = _month_number_en(name)
    return _date_words(day_n, month, int(year) if year else None, "en", day_first=day_first)


def _named_date_ar(match: re.Match[str]) -> str:
    day = int(match[1])
    if not 1 <= day <= 31:
        return match[0]
    words = f"{ar.ordinal(day)} من {match[2]}"
    return words if not match[3] else f"{words} {ar.cardinal(int(match[3]), genitive=True)}"


# --- phone numbers ---------------------------------------------------------------------------

def phone_groups(span: str) -> list[str] | None:
    """The digit groups to read one by one, or None when `span` is no phone number."""
    groups = _PHONE_GROUP.findall(span)
    count = sum(len(group) for group in groups)
    if not 7 <= count <= 15:
        return None
    if len(groups) == 1:
        run = groups[0]
        if not (span.startswith("+") or run.startswith("0") or len(run) >= 10):
            return None
        return _chunk(run)
    if re.fullmatch(r"\d+\.\d+", span):  # a decimal number
        return None
    return groups


def _chunk(run: str) -> list[str]:
    """A bare run in threes, as people read one aloud, with a last group of four, not one."""
    pieces = [run[i : i + 3] for i in range(0, len(run), 3)]
    if len(pieces) > 1 and len(pieces[-1]) == 1:
        pieces[-2:] = [pieces[-2] + pieces[-1]]
    return pieces


def _phone(language: str) -> Callable[[re.Match[str]], str]:
    def read(match: re.Match[str]) -> str:
        span = match[0]
        groups = phone_groups(span)
        if groups is None:
            return span
        if language == "ar":
            words = "، ".join(ar.digits(group) for group in groups)
            return f"زائد {words}" if span.startswith("+") else words
        words = ", ".join(" ".join(num2words(int(d)) for d in group) for group in groups)
        return f"plus {words}" if span.startswith("+") else words

    return read


# --- ordinals --------------------------------------------------------------------------------

def _ordinal_en(match: re.Match[str]) -> str:
    return str(num2words(int(match[1]), to="ordinal"))


def _ordinal_ar(match: re.Match[str]) -> str:
    n = int(match[1])
    return ar.ordinal(n) if 1 <= n <= 99 else match[0]


# --- the remaining numbers (without NeMo) ------------------------------------------------------

def _integer(digits: str, language: str) -> str:
    n = int(digits.replace(",", ""))
    if n > MAX_SPOKEN_INTEGER:
        bare = digits.replace(",", "")
        return ar.digits(bare) if language == "ar" else " ".join(num2words(int(d)) for d in bare)
    return ar.cardinal(n) if language == "ar" else str(num2words(n)).replace(",", "")


def _decimal(whole: str, fraction: str | None, language: str) -> str:
    words = _integer(whole, language)
    if not fraction:
        return words
    if language == "ar":
        tail = ar.digits(fraction) if fraction.startswith("0") else _integer(fraction, "ar")
        return f"{words} فاصلة {tail}"
    return f"{words} point {' '.join(num2words(int(d)) for d in fraction)}"


def _currency(language: str) -> Callable[[re.Match[str]], str]:
    def read(match: re.Match[str]) -> str:
        one, many, minor_one, minor_many, name_ar, minor_ar = _CURRENCY_WORDS[match[1]]
        whole = int(match[2].replace(",", ""))
        minor = int(match[3].ljust(2, "0")) if match[3] else 0
        if language == "ar":
            words = f"{_integer(match[2], 'ar')} {name_ar}"
            return words + (f" و{ar.cardinal(minor)} {minor_ar}" if minor else "")
        words = f"{_integer(match[2], 'en')} {one if whole == 1 else many}"
        if minor:
            words += f" and {num2words(minor)} {minor_one if minor == 1 else minor_many}"
        return words

    return read


def _percent(language: str) -> Callable[[re.Match[str]], str]:
    def read(match: re.Match[str]) -> str:
        words = _decimal(match[1], match[2], language)
        return f"{words} بالمئة" if language == "ar" else f"{words} percent"

    return read


def _number(language: str) -> Callable[[re.Match[str]], str]:
    def read(match: re.Match[str]) -> str:
        sign, whole, fraction = match[1], match[2], match[3]
        if language == "en" and not (sign or fraction) and _YEAR_EN.fullmatch(whole):
            return str(num2words(int(whole), to="year"))
        words = _decimal(whole, fraction, language)
        if sign:
            return f"{'سالب' if language == 'ar' else 'minus'} {words}"
        return words

    return read


def _dotted(language: str) -> Callable[[re.Match[str]], str]:
    def read(match: re.Match[str]) -> str:
        dot = " نقطة " if language == "ar" else " dot "
        return dot.join(_integer(part, language) for part in match[0].split("."))

    return read


def _sub(pattern: re.Pattern[str], replace: Callable[[re.Match[str]], str]) -> Callable[[str], str]:
    return lambda text: pattern.sub(replace, text)


# Order matters: dates and times before phone numbers (2026-12-08 is no phone number), phone
# numbers before dotted numbers (415.555.0199 is one; 2.5.1 is a version, which NeMo reads
# "two. five point one") and before ordinals and cardinals (their digits are read one by one).
_RULES_EN = (
    _sub(_ISO_DATE, _iso_date("en")),
    _sub(_NUMERIC_DATE, _numeric_date("en")),
    _sub(_NAMED_DATE_EN, _named_date_en),
    _sub(_TIME, _time_en),
    _sub(_HOUR_ONLY_EN, _hour_en),
    _sub(_PHONE_CANDIDATE, _phone("en")),
    _sub(_DOTTED, _dotted("en")),
    _sub(_ORDINAL_EN, _ordinal_en),
)
_RULES_AR = (
    _sub(_ISO_DATE, _iso_date("ar")),
    _sub(_NUMERIC_DATE, _numeric_date("ar")),
    _sub(_NAMED_DATE_AR, _named_date_ar),
    _sub(_TIME, _time_ar),
    _sub(_HOUR_AFTER_AR, _hour_after_ar),
    _sub(_PHONE_CANDIDATE, _phone("ar")),
    _sub(_DOTTED, _dotted("ar")),
    _sub(_ORDINAL_AR, _ordinal_ar),
)


def _number_rules(language: str) -> tuple[Callable[[str], str], ...]:
    return (
        _sub(_CURRENCY, _currency(language)),
        _sub(_PERCENT, _percent(language)),
        _sub(_NUMBER, _number(language)),
    )


_NUMBERS = {language: _number_rules(language) for language in ("en", "ar")}
