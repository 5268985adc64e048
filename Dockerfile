# The bridge (and, in the same image, the TTS server: `silma-bridge tts-server`).
#
# The image runs the installed wheel, never a source tree: what the package does not ship
# (its default settings, templates, static files) would be missing here as it is for any
# other install.
FROM python:3.11-slim AS wheel

ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY bridge ./bridge
RUN pip wheel --no-deps --wheel-dir /wheels .

FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BRIDGE_HOST=0.0.0.0 BRIDGE_LOG_FORMAT=json
COPY --from=wheel /wheels /wheels
RUN pip install /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /app bridge \
    && mkdir -p /app/data && chown 10001 /app/data
# The settings' relative paths are the working directory's: data/ holds the SQLite store and
# its secret key (unless BRIDGE_DATABASE_URL / BRIDGE_SECRET_KEY say otherwise), the sim
# engine's speech cache and the silma engine's model files and caches. A volume, so they
# outlive the container; a named volume starts owned by the bridge user, as this folder is.
WORKDIR /app
VOLUME ["/app/data"]
USER 10001

EXPOSE 8080
# Liveness on the port the bridge listens on, read from its settings as the bridge reads it
# (BRIDGE_PORT, else BRIDGE_CONFIG's file, else 8080); set the port there, not with
# `serve --port`, which only the bridge would see. The TTS server's container (same image)
# replaces it: config/deploy/compose.yaml checks its /health on 9000.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["python", "-c", "import urllib.request; from bridge.settings import load_settings; urllib.request.urlopen('http://127.0.0.1:%d/health' % load_settings().port, timeout=2)"]
CMD ["silma-bridge", "serve"]
