#!/usr/bin/env python3
"""What NeMo 1.1.0 reads of numbers, beside the pre-normalizer and the two together.

For a table of agent replies with times, dates, phone numbers, ordinals, money and counts, in
English and Arabic, prints what the silma model would be given by NeMo alone (silma-tts
1.0.5's normalization), by the pre-normalizer alone (no NeMo installed) and by the pre-
normalizer followed by NeMo (what the engine does with NeMo installed), and counts the replies
each leaves with digits the model cannot read. NeMo is the optional [silma-text] extra (about
1 GB); the grammars are built on the first run (about 45 s English, 15 s Arabic, 2 cores):

    .venv/bin/pip install -e '.[silma-text]'
    .venv/bin/python scripts/measure_text_normalization.py [--cache DIR] [--out FILE]

Results: scripts/results/text_normalization.txt.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bridge.tts_server.engines.silma.normalizer import TextNormalizer
from bridge.tts_server.engines.silma.prenormalize import prenormalize

ENGLISH = [
    "Call me at 3:30 pm.", "The meeting is at 15:45.", "It is 9am.",
    "Your appointment is on 2026-12-08.", "Your appointment is on 25/12/2026.",
    "on December 8, 2026", "Call 555-123-4567.", "Call +1 415 555 0199.",
    "My number is 07700900123.", "You are 3rd in the queue.", "the 21st of May",
    "You owe $1,234.56.", "It costs 15.5%.", "Order 12345 shipped.",
    "The balance is 2,500 dollars.", "There are 25000 fans.", "Version 2.5.1 is out.",
]
ARABIC = [
    "الساعة 3:30", "الموعد الساعة 15:45 مساءً", "موعدك يوم 2026-12-08", "موعدك يوم 08/12/2026",
    "اتصل على 0501234567", "اتصل على +966 50 123 4567", "أنت رقم 3 في الانتظار", "الطابق الـ3",
    "المبلغ 1,234.56 ريال", "المبلغ ١٢٣٤ ريال", "الخصم 15%", "الطلب رقم 12345", "لديك 3 رسائل",
    "السعر 250 دولار", "تم الدفع في ٨/١٢/٢٠٢٦", "الرصيد 1,234 ريال", "درجة الحرارة -5",
]


def unread(text: str) -> bool:
    return any(char.isdigit() for char in text)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cache", type=Path, default=Path("data/silma/normalizer-cache"))
    parser.add_argument("--out", type=Path, default=Path("scripts/results/text_normalization.txt"))
    args = parser.parse_args()
    normalizer = TextNormalizer(args.cache)
    print("loading NeMo's grammars (minutes on the first run) ...", flush=True)
    started = time.perf_counter()
    normalizer.load()
    if not normalizer.active:
        print("NeMo is not installed: pip install -e '.[silma-text]'", file=sys.stderr)
        return 2
    print(f"loaded in {time.perf_counter() - started:.1f} s", flush=True)
    nemo = normalizer.nemo
    lines: list[str] = []
    counts = {"nemo": 0, "pre": 0, "both": 0}
    for language, cases in (("en", ENGLISH), ("ar", ARABIC)):
        for index, text in enumerate(cases, 1):
            print(f"{language} {index}/{len(cases)}", flush=True)
            alone = nemo(text, language)
            pre = prenormalize(text, language, cardinals=True)
            both = normalizer(text, language)
            for key, value in (("nemo", alone), ("pre", pre), ("both", both)):
                counts[key] += unread(value)
            lines += [f"[{language}] {text}", f"  NeMo alone : {alone}",
                      f"  pre alone  : {pre}", f"  pre + NeMo : {both}", ""]
    total = len(ENGLISH) + len(ARABIC)
    lines.append(
        f"replies left with digits, of {total}: NeMo alone {counts['nemo']}, pre-normalizer "
        f"alone {counts['pre']}, pre-normalizer + NeMo {counts['both']}"
    )
    report = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report, encoding="utf-8")
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
