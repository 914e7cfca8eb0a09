# One image for every tradesim role: `docker run IMAGE run --role oms --bus nats://… --db postgresql://…`.
# Without arguments it runs the embedded system (every service in one process) on port 8000.
#
#   docker build -t tradesim:0.1.0 .
#   docker run --rm -p 8000:8000 tradesim:0.1.0
#
# The build stage installs the package (runtime dependencies only, no dev extras) into a virtualenv that
# the final stage copies, so neither pip's caches nor the sources end up in the image.
FROM python:3.11-slim AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m venv /opt/tradesim
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tradesim ./tradesim
RUN /opt/tradesim/bin/pip install . \
 && /opt/tradesim/bin/tradesim --help > /dev/null

FROM python:3.11-slim
RUN groupadd --system --gid 10001 tradesim \
 && useradd --system --uid 10001 --gid tradesim --home-dir /var/lib/tradesim --no-create-home \
            --shell /usr/sbin/nologin tradesim \
 && mkdir -p /var/lib/tradesim /etc/tradesim \
 && chown tradesim:tradesim /var/lib/tradesim
COPY --from=build /opt/tradesim /opt/tradesim
# Settings a container wants by default: listen on every interface, keep state in the (mountable) data
# directory, JSON logs on stdout. Flags given to `tradesim run` win over these.
ENV PATH=/opt/tradesim/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TRADESIM_HOST=0.0.0.0 \
    TRADESIM_PORT=8000 \
    TRADESIM_DATA_DIR=/var/lib/tradesim \
    TRADESIM_LOG_FILE=-
USER 10001:10001
WORKDIR /var/lib/tradesim
EXPOSE 8000
# Liveness of the process on its HTTP port; a role started with another --port sets TRADESIM_PORT to match
# (docker-compose.yml and the Helm chart define their own probes per role).
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TRADESIM_PORT', '8000') + '/healthz', timeout=3)"]
ENTRYPOINT ["tradesim"]
CMD ["run"]
