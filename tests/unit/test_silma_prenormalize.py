"""What the silma model is given for numbers: the pre-normalizer's output, case by case.

The English cases NeMo 1.1.0 also reads agree with NeMo's own output word for word (measured in
scripts/results/text_normalization.txt), apart from case and hyphens, which the model does not hear.
"""

from __future__ import annotations

import pytest

from bridge.tts_server.engines.silma import arabic_numbers as ar
from bridge.tts_server.engines.silma.normalizer import TextNormalizer
from bridge.tts_server.engines.silma.prenormalize import phone_groups, prenormalize

# (written, what the model is given): read in both modes, with or without NeMo
ENGLISH = [
    ("Call me at 3:30 pm.", "Call me at three thirty p m."),
    ("The meeting is at 15:45.", "The meeting is at fifteen forty-five."),
    ("It is 9am.", "It is nine a m."),
    ("See you at 9 a.m. tomorrow", "See you at nine a m tomorrow"),
    ("at 9:05", "at nine oh five"),
    ("at 12:00", "at twelve o'clock"),
    ("at 15:00", "at fifteen hundred"),
    ("at 00:30", "at twelve thirty a m"),
    ("Your appointment is on 2026-12-08.", "Your appointment is on December eighth, twenty twenty-six."),
    ("due 12/08/2026", "due December eighth, twenty twenty-six"),  # month first, as in the US
    ("due 25/12/2026", "due December twenty-fifth, twenty twenty-six"),  # 25 cannot be a month
    ("on December 8, 2026", "on December eighth, twenty twenty-six"),
    ("the 21st of May", "the twenty-first of May"),
    ("on May 3rd", "on May third"),
    ("You are 3rd in the queue.", "You are third in the queue."),
    ("Call 555-123-4567.", "Call five five five, one two three, four five six seven."),
    # NeMo reads these groups as cardinals ("four hundred and fifteen")
    ("Call +1 415 555 0199.", "Call plus one, four one five, five five five, zero one nine nine."),
    ("Call (415) 555-0199", "Call four one five, five five five, zero one nine nine"),
    ("Version 2.5.1 is out.", "Version two dot five dot one is out."),
    ("Call 415.555.0199", "Call four one five, five five five, zero one nine nine"),
    ("My number is 07700900123.",
     "My number is zero seven seven, zero zero nine, zero zero one, two three."),
]
# (written, without NeMo, with NeMo): the rest of the numbers are NeMo's in English
ENGLISH_CARDINALS = [
    ("You owe $1,234.56.",
     "You owe one thousand two hundred and thirty-four dollars and fifty-six cents.",
     "You owe $1,234.56."),
    ("Pay $1 now", "Pay one dollar now", "Pay $1 now"),
    ("It costs 15.5%.", "It costs fifteen point five percent.", "It costs 15.5%."),
    ("The balance is 2,500 dollars.", "The balance is two thousand five hundred dollars.",
     "The balance is 2,500 dollars."),
    ("In 2024 we grew.", "In twenty twenty-four we grew.", "In 2024 we grew."),
    ("It fell -5 degrees", "It fell minus five degrees", "It fell -5 degrees"),
    ("Order 12345 shipped.", "Order twelve thousand three hundred and forty-five shipped.",
     "Order 12345 shipped."),
]
ARABIC = [
    ("الساعة 3:30", "الساعة الثالثة والنصف"),
    ("الموعد الساعة 15:45 مساءً", "الموعد الساعة الرابعة إلا ربعًا مساءً"),
    ("الساعة 3:45 م", "الساعة الرابعة إلا ربعًا مساءً"),
    ("الساعة 10:20", "الساعة العاشرة والثلث"),
    ("الساعة 7:07", "الساعة السابعة وسبع دقائق"),
    ("الساعة 8:25 ص", "الساعة الثامنة وخمس وعشرون دقيقة صباحًا"),
    ("الساعة 9 صباحًا", "الساعة التاسعة صباحًا"),
    ("موعدك يوم 2026-12-08", "موعدك يوم الثامن من ديسمبر ألفين وستة وعشرين"),
    ("موعدك يوم 08/12/2026", "موعدك يوم الثامن من ديسمبر ألفين وستة وعشرين"),  # day first
    ("تم الدفع في ٨/١٢/٢٠٢٦", "تم الدفع في الثامن من ديسمبر ألفين وستة وعشرين"),
    ("في 8 ديسمبر 2026", "في الثامن من ديسمبر ألفين وستة وعشرين"),
    ("في 1 كانون الثاني", "في الأول من كانون الثاني"),
    ("اتصل على 0501234567", "اتصل على صفر خمسة صفر، واحد اثنان ثلاثة، أربعة خمسة ستة سبعة"),
    ("اتصل على +966 50 123 4567",
     "اتصل على زائد تسعة ستة ستة، خمسة صفر، واحد اثنان ثلاثة، أربعة خمسة ستة سبعة"),
    ("الطابق الـ3", "الطابق الثالث"),
    ("للمرة ال21", "للمرة الحادي والعشرون"),
    # NeMo's Arabic grammar leaves each of these unread or misreads it
    ("المبلغ 1,234.56 ريال", "المبلغ ألف ومئتان وأربعة وثلاثون فاصلة ستة وخمسون ريال"),
    ("المبلغ ١٢٣٤ ريال", "المبلغ ألف ومئتان وأربعة وثلاثون ريال"),
    ("الطلب رقم 12345", "الطلب رقم اثنا عشر ألفًا وثلاثمئة وخمسة وأربعون"),
    ("الخصم 15%", "الخصم خمسة عشر بالمئة"),
    ("الخصم ١٥٪", "الخصم خمسة عشر بالمئة"),
    ("السعر $250", "السعر مئتان وخمسون دولار"),
    ("درجة الحرارة -5", "درجة الحرارة سالب خمسة"),
    ("النسبة 0.05", "النسبة صفر فاصلة صفر خمسة"),
]


@pytest.mark.parametrize(("written", "spoken"), ENGLISH)
def test_english_times_dates_phones_and_ordinals(written: str, spoken: str) -> None:
    assert prenormalize(written, "en") == spoken
    assert prenormalize(written, "en", cardinals=True) == spoken


@pytest.mark.parametrize(("written", "alone", "before_nemo"), ENGLISH_CARDINALS)
def test_english_cardinals_are_read_only_without_nemo(written: str, alone: str,
                                                      before_nemo: str) -> None:
    assert prenormalize(written, "en", cardinals=True) == alone
    assert prenormalize(written, "en") == before_nemo


@pytest.mark.parametrize(("written", "spoken"), ARABIC)
def test_arabic_numbers_are_all_read(written: str, spoken: str) -> None:
    assert prenormalize(written, "ar", cardinals=True) == spoken


def test_the_normalizer_reads_every_arabic_number_even_beside_nemo() -> None:
    normalizer = TextNormalizer(None)
    normalizer.load()
    assert not normalizer.active
    assert normalizer("It is $5.", "en") == "It is five dollars."
    assert normalizer("الطلب رقم 12345", "ar") == "الطلب رقم اثنا عشر ألفًا وثلاثمئة وخمسة وأربعون"


@pytest.mark.parametrize(("span", "groups"), [
    ("555-123-4567", ["555", "123", "4567"]),
    ("+1 415 555 0199", ["1", "415", "555", "0199"]),
    ("0501234567", ["050", "123", "4567"]),
    ("1234567890", ["123", "456", "7890"]),
    ("+4915112345678", ["491", "511", "234", "5678"]),  # threes, never a lone last digit
    ("1234567", None),  # seven bare digits without a 0 or +: an amount, for the cardinals
    ("12 34", None),  # too few digits for any phone
    ("3.14159265", None),  # a decimal
    ("1234567890123456", None),  # more than E.164's 15 digits
])
def test_what_counts_as_a_phone_number(span: str, groups: list[str] | None) -> None:
    assert phone_groups(span) == groups


@pytest.mark.parametrize(("n", "nominative", "genitive"), [
    (0, "صفر", "صفر"),
    (2, "اثنان", "اثنين"),
    (12, "اثنا عشر", "اثني عشر"),
    (21, "واحد وعشرون", "واحد وعشرين"),
    (100, "مئة", "مئة"),
    (200, "مئتان", "مئتين"),
    (1000, "ألف", "ألف"),
    (2026, "ألفان وستة وعشرون", "ألفين وستة وعشرين"),
    (3000, "ثلاثة آلاف", "ثلاثة آلاف"),
    (11000, "أحد عشر ألفًا", "أحد عشر ألفًا"),
    (100000, "مئة ألف", "مئة ألف"),
    (2000000, "مليونان", "مليونين"),
    (1500000000, "مليار وخمسمئة مليون", "مليار وخمسمئة مليون"),
])
def test_arabic_cardinals(n: int, nominative: str, genitive: str) -> None:
    assert ar.cardinal(n) == nominative
    assert ar.cardinal(n, genitive=True) == genitive


def test_arabic_feminine_counts_and_ordinals() -> None:
    assert [ar.cardinal(n, feminine=True) for n in (1, 3, 8, 10, 11, 13, 25)] == [
        "واحدة", "ثلاث", "ثماني", "عشر", "إحدى عشرة", "ثلاث عشرة", "خمس وعشرون"]
    assert [ar.ordinal(n) for n in (1, 10, 11, 12, 20, 31)] == [
        "الأول", "العاشر", "الحادي عشر", "الثاني عشر", "العشرون", "الحادي والثلاثون"]
    assert [ar.ordinal(n, feminine=True) for n in (1, 3, 11, 12)] == [
        "الأولى", "الثالثة", "الحادية عشرة", "الثانية عشرة"]
    assert ar.digits("0519") == "صفر خمسة واحد تسعة"


def test_arabic_numbers_out_of_range_are_refused() -> None:
    with pytest.raises(ValueError):
        ar.cardinal(-1)
    with pytest.raises(ValueError):
        ar.ordinal(100)
    # beyond the words: read digit by digit rather than not at all
    assert prenormalize("الرقم 1234567890123456", "ar", cardinals=True) == (
        f"الرقم {ar.digits('1234567890123456')}")
