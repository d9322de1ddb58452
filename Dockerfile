# One image for every process of the service; docker-compose.yml picks the command.
FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY core core
COPY emulators emulators
COPY exsync exsync
COPY subscriptions subscriptions
COPY webhooks webhooks
COPY workers workers
RUN pip install --no-cache-dir . && useradd --system --uid 10001 exsync
USER exsync
ENTRYPOINT ["exsync"]
CMD ["--help"]
