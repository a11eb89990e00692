# annotation-gateway container image. Auth must stay enabled: the gateway refuses to listen on a
# non-loopback address without it. Mount your config at /etc/annotation-gateway/gateway.toml and
# pass vendor secrets as environment variables (the config names them).
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install --no-cache-dir --upgrade pip \
 && pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --create-home --uid 10001 gateway
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
COPY config/gateway.toml /etc/annotation-gateway/gateway.toml
USER gateway
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python", "-c", "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz', timeout=2).status == 200 else 1)"]
ENTRYPOINT ["annotation-gateway"]
CMD ["serve", "--config", "/etc/annotation-gateway/gateway.toml", "--host", "0.0.0.0", "--port", "8080"]
