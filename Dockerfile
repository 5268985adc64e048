# The bridge (and, in the same image, the TTS server: `python -m bridge tts-server`).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    BRIDGE_HOST=0.0.0.0 BRIDGE_LOG_FORMAT=json
WORKDIR /app

COPY pyproject.toml README.md ./
COPY bridge ./bridge
COPY config ./config
RUN pip install . && useradd --system --uid 10001 --home /app bridge \
    && mkdir -p /app/data && chown bridge /app/data
USER bridge

EXPOSE 8080
# Liveness on the port the bridge listens on (BRIDGE_PORT, 8080 unless set). The TTS server's
# container (same image) replaces it: config/deploy/compose.yaml checks its /health on 9000.
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('BRIDGE_PORT', '8080'), timeout=2)" || exit 1
CMD ["python", "-m", "bridge", "serve"]
