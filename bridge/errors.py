"""The project's error tree: one root, kept shallow.

BridgeError                  root; every error we raise on purpose derives from it
├── ConfigError              a setting is missing or invalid (message names the setting)
├── ProtocolError            a peer sent something we cannot parse (provider or SILMA message)
├── AudioFormatError         audio bytes that are not what they claim to be
└── TTSError                 text to speech failed; `retryable` says whether trying again may help
    ├── TTSUnavailable       no TTS server could be reached (connect refused, timed out)
    └── TTSReplyError        the TTS server's reply breaks the protocol (also a ProtocolError)
        └── TTSReplyTooLarge a reply past the size bounds (message, chunk, request)
"""


class BridgeError(Exception):
    """Root of the errors this project raises on purpose."""


class ConfigError(BridgeError):
    """A setting is missing or invalid."""


class ProtocolError(BridgeError):
    """A peer's message cannot be parsed or breaks the protocol."""


class AudioFormatError(BridgeError):
    """Audio bytes that do not decode as the declared or detected format."""


class TTSError(BridgeError):
    """Synthesis failed. `retryable` is True when the same request may succeed later; `code` is
    the server's error code when it answered one (busy, timeout, unknown_voice, ...), and
    `retry_after_s` its hint of when to try again."""

    def __init__(self, message: str, *, retryable: bool = False, code: str = "",
                 retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retryable = retryable
        self.code = code
        self.retry_after_s = retry_after_s


class TTSUnavailable(TTSError):
    """No TTS server could be reached."""

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=True)


class TTSReplyError(TTSError, ProtocolError):
    """The TTS server sent a reply we refuse: malformed, out of bounds, or too large.

    A TTSError so a call's speaker fails the one utterance with this reason (it handles
    TTSError); a ProtocolError because it is a peer's message that cannot be used. Never
    retryable: a server that sent it once is not trusted to do better on the same request.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message, retryable=False)


class TTSReplyTooLarge(TTSReplyError):
    """A reply, a chunk's audio, or a request's audio in all, over its size bound."""
