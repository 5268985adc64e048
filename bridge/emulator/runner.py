"""Emulated calls placed on a bridge: `python -m bridge call`, the integration tests and the
load test all run their calls through `run_call`.

A call rings the bridge the way its provider does (the answer webhook), opens the media stream
the answer names, and hands the open call to a `Talk`: a script by default (greetings, then
each key of `dtmf` and the agent's reply to it, then each text of `say` until it has played
out), or the caller's own, such as the load test's ask-again loop. Then it hangs up and
reports. This module imports the provider modules, to pick a call's emulator by name; they
import only the shared ones (wire.py, call.py), never this one.
"""

import asyncio
import contextlib
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from bridge.emulator.call import CallEmulator
from bridge.emulator.clock import MediaClock
from bridge.emulator.plivo_wire import PlivoCallEmulator
from bridge.emulator.report import CallReport, write_wav
from bridge.emulator.twilio_wire import TwilioCallEmulator
from bridge.emulator.wire import CallFailed, describe

_EMULATORS: dict[str, type[CallEmulator]] = {
    "twilio": TwilioCallEmulator,
    "plivo": PlivoCallEmulator,
}
_SAY_TIMEOUT = aiohttp.ClientTimeout(total=10)  # the bridge accepts a say at once (HTTP 202)
_HANGUP_TIMEOUT_S = 10.0  # a bridge that stopped reading must not keep the caller forever
# After a key press, how long the caller waits for the agent to begin a reply before pressing
# the next key (a key may have none): an LLM agent's bound for its first token is 4 s.
KEY_REPLY_WAIT_S = 5.0

Talk = Callable[[CallEmulator], Awaitable[str | None]]
"""The caller's part of a call, from the moment its media stream is open (the greetings
included); returns why it ended the call early, or None. The call hangs up when it returns."""


def emulator_class(provider: str) -> type[CallEmulator]:
    """The emulator of `provider` ("twilio" or "plivo")."""
    if provider not in _EMULATORS:
        raise ValueError(f"provider {provider!r} is not emulated (only {', '.join(_EMULATORS)})")
    return _EMULATORS[provider]


async def run_call(
    bridge_url: str,
    *,
    provider: str = "twilio",
    say: list[str] | None = None,
    dtmf: str = "",
    talk: Talk | None = None,
    caller_audio: bytes | None = None,
    record_path: Path | None = None,
    record: bool = True,
    auth_token: str | None = None,
    user_path: str = "",
    max_seconds: float | None = 30.0,
    duration_s: float | None = None,
    setup_seconds: float | None = None,
    wait_marks: int = 1,
    connect_url: str | None = None,
    session: aiohttp.ClientSession | None = None,
    media_clock: MediaClock | None = None,
    control_token: str | None = None,
) -> CallReport:
    """Place one emulated call on the bridge at `bridge_url` and report what the caller got.

    Rings the bridge the way `provider` does (Twilio: /twilio/voice, Plivo: /plivo/answer, then
    `user_path`; signed when `auth_token` is given), waits for `wait_marks` greeting utterances
    to end, presses each key of `dtmf` in turn (waiting up to KEY_REPLY_WAIT_S for the agent
    to begin a reply, then until it ends), then has the bridge say each text of `say` (POST
    /calls/{sid}/say, as the call's owner: `control_token` is that user's access token) and
    waits until it has played out, then hangs up. `talk` replaces that script (after the same
    `wait_marks` greetings were announced to the emulator).

    Everything must fit in `max_seconds` (None: the talk bounds itself); setting the call up,
    in `setup_seconds` if given. `duration_s`: the caller hangs up that long after the stream
    opened, wherever the talk is (cut short there, which is no error), and not before, unless
    the bridge ends the call. Raises CallFailed / ProtocolError when no call could be set
    up; a call that starts but goes wrong returns a report with `error` set. `record` keeps what
    the caller heard in the report (and `record_path` saves it). Pass `session` to share a
    connection pool (a load test: give its connector limit=0, every stream holds a connection)
    and `media_clock` to send every call's caller audio on one timer.
    """
    if (say or dtmf) and talk is not None:
        raise ValueError("`say` and `dtmf` are the default talk's script: pass them or `talk`, "
                         "not both")
    cls = emulator_class(provider)
    base = bridge_url.rstrip("/")
    deadline = None if max_seconds is None else asyncio.get_running_loop().time() + max_seconds
    setup_limit = max_seconds if setup_seconds is None else setup_seconds
    own_session = session is None
    http = session if session is not None else aiohttp.ClientSession()
    try:
        try:
            async with asyncio.timeout(setup_limit):
                emulator = await _place_call(
                    cls,
                    http,
                    f"{base}{cls.wire_type.answer_path}{user_path}",
                    auth_token,
                    wait_marks,
                    caller_audio=caller_audio,
                    connect_url=connect_url,
                    record=record,
                    media_clock=media_clock,
                )
        except TimeoutError as exc:
            raise CallFailed(f"no call set up within {setup_limit} s") from exc
        if talk is None:
            talk = functools.partial(_converse, http, base, wait_marks, dtmf, say or [],
                                     control_token)
        if duration_s is not None:
            talk = functools.partial(_talk_for, talk, duration_s)
        try:
            async with asyncio.timeout_at(deadline):
                error = await talk(emulator)
        except TimeoutError:
            error = f"timed out after {max_seconds} s waiting for the bridge"
        finally:
            await _hang_up(emulator)
    finally:
        if own_session:
            await http.close()
    report = emulator.report()
    report.error = report.error or error
    if record_path is not None:
        write_wav(record_path, report.recording)
    return report


async def request_say(
    http: aiohttp.ClientSession,
    base: str,
    call_sid: str,
    text: str,
    control_token: str | None,
) -> str | None:
    """Have the bridge say `text` on the call, as its owner does (POST /calls/{sid}/say with
    that user's access token); why the bridge did not take it, or None once it did."""
    headers = {"Authorization": f"Bearer {control_token}"} if control_token else {}
    url = f"{base}/calls/{call_sid}/say"
    try:
        async with http.post(
            url, json={"text": text}, headers=headers, timeout=_SAY_TIMEOUT
        ) as resp:
            if resp.status != 202:
                body = await resp.text()
                return f"POST {url} answered HTTP {resp.status}: {body[:200]}"
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        return f"POST {url} failed: {describe(exc)}"
    return None


async def _place_call(
    cls: type[CallEmulator],
    http: aiohttp.ClientSession,
    answer_url: str,
    auth_token: str | None,
    greetings: int,
    *,
    caller_audio: bytes | None,
    connect_url: str | None,
    record: bool,
    media_clock: MediaClock | None,
) -> CallEmulator:
    """Ring the bridge (answer webhook) and open the media stream it asks for."""
    answer = await cls.wire_type.answer(http, answer_url, auth_token)
    emulator = cls(
        http,
        answer.stream_url,
        call_sid=answer.call_sid,
        account_sid=answer.account_sid,
        parameters=answer.parameters,
        caller_audio=caller_audio,
        auth_token=auth_token,
        connect_url=connect_url,
        record=record,
        media_clock=media_clock,
    )
    try:
        await emulator.connect(greetings=greetings)
    except BaseException:
        await emulator.abort()  # cancelled by the setup timeout with the stream half open
        raise
    return emulator


async def _converse(
    http: aiohttp.ClientSession,
    base: str,
    greetings: int,
    keys: str,
    texts: list[str],
    control_token: str | None,
    emulator: CallEmulator,
) -> str | None:
    """The default talk: wait for the greetings to end (played out, or cut by the caller's
    speech), press each of `keys` and hear the agent's reply if it begins one, then say each of
    `texts` until it has played out; returns why it stopped early, or None."""
    try:
        await emulator.wait_for_utterances(greetings)
        for key in keys:
            await _press(emulator, key)
        for text in texts:
            emulator.expect_utterance(text)
            asked = len(emulator.utterances)  # its row is the last; replies begun later follow
            if (problem := await request_say(http, base, emulator.call_sid, text, control_token)):
                return problem
            await emulator.wait_for_utterances(asked)
    except CallFailed as exc:
        return str(exc)
    return None


async def _press(emulator: CallEmulator, key: str) -> None:
    """Press `key` once all before it is over; hear the reply the agent begins to it, if it
    begins one within KEY_REPLY_WAIT_S."""
    before = len(emulator.utterances)
    await emulator.send_dtmf(key)
    try:
        async with asyncio.timeout(KEY_REPLY_WAIT_S):
            await emulator.wait_for_utterances(before + 1, begun=True)
    except TimeoutError:
        return  # no reply to this key
    await emulator.wait_for_utterances(before + 1)


async def _talk_for(talk: Talk, seconds: float, emulator: CallEmulator) -> str | None:
    """`talk`, then the line held until `seconds` after the stream opened, or until the bridge
    ends the call; the talk is cut short there, as a caller who hangs up cuts it."""
    opened_at = asyncio.get_running_loop().time() - emulator.now()
    window = asyncio.timeout_at(opened_at + seconds)
    try:
        async with window:
            if (error := await talk(emulator)) is not None:
                return error
            await emulator.wait_closed()
    except TimeoutError:
        if not window.expired():  # the talk's own, not the end of the call
            raise
    return None


async def _hang_up(emulator: CallEmulator) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(_HANGUP_TIMEOUT_S):
            await emulator.stop()
