"""Parts of scripts/loadtest.py, one job each:

- the processes under test: servers (start, pin, stop), tts_standin (the pre-rendered TTS
  server, its own process) with tts_replies (its messages and schedule: pure);
- the generator's call legs: caller (one call: the stream, the playout, the marks) over
  wsframe (RFC 6455 client framing: pure), media_frames (caller media templates: pure),
  outbound (reading the bridge's messages: pure) and shared_clock (one timer for every call's
  caller audio);
- the numbers: stats (percentiles, per-level results, validity, the table: pure), summary
  (several runs as median and spread: pure), meters (CPU and memory; shared with
  bench_inbound.py) and plot (the PNG).
"""
