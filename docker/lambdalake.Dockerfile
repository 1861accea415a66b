# syntax=docker/dockerfile:1
# One image for every lambdalake process: collector, speed, deliver, serve, the one-shot
# `lambdalake warehouse init`, and the Airflow 3 components (api-server, scheduler,
# dag-processor, triggerer) whose tasks run the batch layer (PySpark, so Java 17 is in it).
# Built from the lock file with uv, as scripts/setup.sh does. Build from the repository root:
#   docker build -f docker/lambdalake.Dockerfile -t lambdalake .

# --- the dashboard's chart library (uplot), installed from package-lock.json ------------------
FROM node:20.18.1-bookworm-slim AS node-packages
WORKDIR /build
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund --loglevel=error

# --- Python packages (locked), then the project itself -------------------------------------------
FROM python:3.11.11-slim-bookworm AS build
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PROJECT_ENVIRONMENT=/app/.venv
WORKDIR /app
# The same uv as scripts/setup.sh (UV_VERSION), from PyPI.
RUN pip install --no-cache-dir --disable-pip-version-check uv==0.13.9
COPY pyproject.toml uv.lock README.md ./
# Dependencies first: this layer is reused until uv.lock changes.
RUN uv sync --frozen --no-dev --no-install-project
COPY lambdalake/ lambdalake/
COPY ingest/ ingest/
COPY speed_layer/ speed_layer/
COPY spark_jobs/ spark_jobs/
COPY batch/ batch/
COPY dags/ dags/
COPY warehouse/ warehouse/
COPY serving/ serving/
COPY bench/ bench/
COPY sql/ sql/
RUN uv sync --frozen --no-dev

# --- runtime -----------------------------------------------------------------------------------------
FROM python:3.11.11-slim-bookworm
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends openjdk-17-jre-headless \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --create-home --home-dir /home/lambdalake lambdalake \
    && mkdir -p /data/lake /data/home \
    && chown -R lambdalake:lambdalake /data
COPY --from=build /app /app
COPY --from=node-packages /build/node_modules/uplot /app/node_modules/uplot
ENV PATH=/app/.venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LAMBDALAKE_HOME=/data/home \
    LAMBDALAKE_LAKE_URI=file:///data/lake
WORKDIR /app
USER lambdalake
CMD ["lambdalake", "--help"]
