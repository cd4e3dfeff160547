# ECM Gateway: one image for every role. By default the API and file drop in one process with
# the embedded store under /data; with `serve --store postgresql+psycopg://… --queue redis://…`
# the API of a scale-out deployment, and with `worker --store … --queue … --partners …` a Celery
# worker (deploy/compose.yaml). Not built in CI; see README "Deployment modes".
# With --store postgresql://… every shared state (control-number counters included) is in the
# database: /data is per container, workers need not share it.
# Stage 1: wheels for the gateway and its dependencies, the X12 engine's hot modules compiled
# with Cython (setup.py; it needs a C compiler, which the final image does not carry).
FROM python:3.11-slim AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY pyproject.toml setup.py README.md ./
COPY gateway ./gateway
# the postgres extra: psycopg for the scale-out store (Celery and redis are core dependencies)
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[postgres]"

FROM python:3.11-slim

# The trading partners are read from /config/partners.yaml (ECM_GATEWAY_PARTNERS): mount your
# partner file there (deploy/config/partners.yaml is a sample; the format is documented in
# config/demo/partners.yaml). Without it the gateway exits at once, naming that path; run
# `docker run -p 8080:8080 IMAGE serve --host 0.0.0.0 --demo` for the demo partners instead.
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    ECM_GATEWAY_HOME=/app \
    ECM_GATEWAY_VAR=/data \
    ECM_GATEWAY_PARTNERS=/config/partners.yaml

WORKDIR /app
# every wheel stage 1 built (the gateway with its compiled modules, and its dependencies)
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index /wheels/*.whl && rm -rf /wheels
COPY profiles ./profiles
COPY mappings ./mappings
COPY config ./config

RUN useradd --system --uid 10001 --home-dir /data --create-home gateway
USER gateway
VOLUME ["/data", "/config"]
EXPOSE 8080
HEALTHCHECK --interval=30s --timeout=5s CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/healthz').status == 200 else 1)"
ENTRYPOINT ["ecm-gateway"]
# the API and the file drop (under /data/drop) with the embedded store under /data
CMD ["serve", "--host", "0.0.0.0", "--port", "8080", "--drop", "/data/drop"]
