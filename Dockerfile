# corsproxy: a reverse proxy that adds correct CORS to any HTTP API.
#   docker build -t corsproxy .
#   docker run -p 8080:8080 -e CORSPROXY_UPSTREAM=http://legacy:9000 \
#     -e CORSPROXY_ALLOW_ORIGINS=https://app.example.com corsproxy
# A config file mounted at /etc/corsproxy/config.yaml is read when present.

FROM python:3.12-slim AS build
WORKDIR /src
COPY pyproject.toml README.md LICENSE ./
COPY corsproxy ./corsproxy
# Wheels for corsproxy and its dependencies; the final stage installs them without a network.
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[speed]"

FROM python:3.12-slim
# The package's version (corsproxy/__init__.py): tests/docker/run.sh passes it, and
# tests/test_deploy.py keeps this default equal to it for a plain `docker build`.
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="corsproxy" \
      org.opencontainers.image.description="A reverse proxy that adds correct CORS to any HTTP API" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"
RUN groupadd --system --gid 10001 corsproxy \
    && useradd --system --uid 10001 --gid corsproxy --no-create-home --home-dir /nonexistent \
       --shell /usr/sbin/nologin corsproxy
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl \
    && rm -rf /wheels
# The admin listener (for HEALTHCHECK) on the container's loopback; set
# CORSPROXY_ADMIN_LISTEN=0.0.0.0:9901 where probes come from outside (Kubernetes).
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CORSPROXY_ADMIN_LISTEN=127.0.0.1:9901
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["corsproxy", "healthcheck"]
# exec form: corsproxy is PID 1 and receives SIGTERM (drain) and SIGHUP (reload) itself.
ENTRYPOINT ["corsproxy"]
CMD ["serve"]
