"""`assert_is_speech`: does this audio sound like someone talking (not silence, a tone or noise)?

Four cheap signs of speech, all required, measured on 25 ms frames:
- loud enough, with much of its energy in the telephone band 300-3400 Hz (at least 40%: at
  24 kHz a stretch rich in "s" sounds puts half of it above the band; white noise has 26%);
- band energy that rises and falls syllable by syllable (high coefficient of variation and
  several peaks at least 9 dB above the dips around them) - a steady tone or hiss fails;
- a spectral centroid that moves as vowels change - an amplitude-modulated tone fails;
- voiced frames: a clear pitch period of 2.5-12.5 ms (80-400 Hz) in many loud frames - bursts
  of noise fail.
"""

from __future__ import annotations

import numpy as np

BAND_HZ = (300.0, 3400.0)
FRAME_S = 0.025
MIN_SECONDS = 0.3
MIN_RMS = 0.005
MIN_BAND_FRACTION = 0.4
MIN_ENERGY_CV = 0.5
PEAK_PROMINENCE_DB = 9.0
MIN_PEAKS_PER_S = 1.0
MIN_CENTROID_STD_HZ = 20.0
PITCH_S = (0.0025, 0.0125)
VOICED_CORRELATION = 0.5
MIN_VOICED_FRACTION = 0.3


def speech_features(samples: np.ndarray, rate: int) -> dict[str, float]:
    """The measures `assert_is_speech` judges, for messages and tuning."""
    x = np.asarray(samples, dtype=np.float64)
    n = int(rate * FRAME_S)
    frames = x[: x.size // n * n].reshape(-1, n)
    if not frames.size:
        return {"seconds": x.size / rate}
    spectrum = np.abs(np.fft.rfft(frames * np.hanning(n), axis=1)) ** 2
    freqs = np.fft.rfftfreq(n, 1 / rate)
    band = (freqs >= BAND_HZ[0]) & (freqs <= BAND_HZ[1])
    band_energy = spectrum[:, band].sum(axis=1)
    loud = band_energy > 0.01 * band_energy.max() if band_energy.max() > 0 else band_energy > 0
    centroid = (spectrum[:, band] @ freqs[band]) / np.maximum(band_energy, 1e-20)
    return {
        "seconds": x.size / rate,
        "rms": float(np.sqrt(np.mean(x**2))),
        "band_fraction": float(spectrum[:, band].sum() / max(spectrum.sum(), 1e-20)),
        "energy_cv": float(band_energy.std() / max(band_energy.mean(), 1e-20)),
        "peaks": float(_count_peaks(10 * np.log10(band_energy + 1e-12))),
        "centroid_std_hz": float(centroid[loud].std()) if loud.any() else 0.0,
        "voiced_fraction": _voiced_fraction(frames[loud], rate),
    }


def assert_is_speech(samples: np.ndarray, rate: int) -> None:
    """Fail with the measured features unless the audio looks like speech."""
    f = speech_features(samples, rate)
    seconds = f["seconds"]
    checks = {
        f"at least {MIN_SECONDS} s long": seconds >= MIN_SECONDS,
        f"rms >= {MIN_RMS}": f.get("rms", 0.0) >= MIN_RMS,
        f"band fraction >= {MIN_BAND_FRACTION}": f.get("band_fraction", 0.0) >= MIN_BAND_FRACTION,
        f"energy cv >= {MIN_ENERGY_CV}": f.get("energy_cv", 0.0) >= MIN_ENERGY_CV,
        "syllable peaks": f.get("peaks", 0.0) >= max(2.0, int(MIN_PEAKS_PER_S * seconds)),
        f"centroid std >= {MIN_CENTROID_STD_HZ} Hz": (
            f.get("centroid_std_hz", 0.0) >= MIN_CENTROID_STD_HZ
        ),
        f"voiced fraction >= {MIN_VOICED_FRACTION}": (
            f.get("voiced_fraction", 0.0) >= MIN_VOICED_FRACTION
        ),
    }
    failed = [name for name, ok in checks.items() if not ok]
    rounded = {k: round(v, 3) for k, v in f.items()}
    assert not failed, f"not speech: failed {failed}; features {rounded}"


def _count_peaks(db: np.ndarray) -> int:
    """Rises of PEAK_PROMINENCE_DB above the last dip, each followed by a fall as deep."""
    smooth = np.convolve(db, np.ones(3) / 3, mode="valid")
    if not smooth.size:
        return 0
    peaks, low, high = 0, smooth[0], None
    for value in smooth:
        if high is None:
            low = min(low, value)
            if value >= low + PEAK_PROMINENCE_DB:
                high = value
        else:
            high = max(high, value)
            if value <= high - PEAK_PROMINENCE_DB:
                peaks, low, high = peaks + 1, value, None
    return peaks + (high is not None)


def _voiced_fraction(frames: np.ndarray, rate: int) -> float:
    if not frames.size:
        return 0.0
    lo, hi = int(PITCH_S[0] * rate), int(PITCH_S[1] * rate)
    centered = frames - frames.mean(axis=1, keepdims=True)
    # Autocorrelation by FFT, normalized by lag 0; a pitch period shows as a strong peak.
    size = 2 * frames.shape[1]
    ac = np.fft.irfft(np.abs(np.fft.rfft(centered, size, axis=1)) ** 2, size, axis=1)
    ac = ac[:, : frames.shape[1]] / np.maximum(ac[:, :1], 1e-20)
    # Unbiased: lag k sums n - k products.
    ac *= frames.shape[1] / (frames.shape[1] - np.arange(frames.shape[1]))
    return float((ac[:, lo : hi + 1].max(axis=1) >= VOICED_CORRELATION).mean())
