# stream-stats: one image for every role (serve, jobs, migrate, run, simulate).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY streamstats streamstats
COPY ingest ingest
COPY analytics analytics
COPY jobs jobs
COPY sql sql
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    STREAMSTATS_HOST=0.0.0.0 \
    STREAMSTATS_PORT=8000 \
    STREAMSTATS_REPORTS_DIR=/data/reports \
    STREAMSTATS_LOG_FORMAT=json
COPY --from=build /wheels /wheels
# A named volume mounted on /data/reports copies this owner, so reports stay writable.
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels \
    && useradd --system --uid 10001 --home-dir /data --create-home streamstats \
    && mkdir -p /data/reports && chown streamstats /data/reports
USER streamstats
WORKDIR /data
EXPOSE 8000
# /healthz only says the process answers; the compose file gates traffic on /readyz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen(f'http://127.0.0.1:{os.environ.get(\"STREAMSTATS_PORT\", \"8000\")}/healthz', timeout=2)"
ENTRYPOINT ["streamstats"]
CMD ["serve"]
