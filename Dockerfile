# NeurFlow service, CPU image.
#   docker build -t neurflow .
#   docker run -p 8000:8000 -v neurflow-data:/data -v /path/to/assets:/assets:ro \
#              -e NEURFLOW_API_KEYS=change-me neurflow
# Data (SQLite job table, artifacts) lives in the /data volume; CLIP weights and vocabularies that
# jobs may name go in /assets (read-only). Models and datasets are uploaded through the API.
#
# CUDA image: start from a CUDA runtime base (e.g. nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 with
# python3.11), install torch from the matching CUDA wheel index
# (--index-url https://download.pytorch.org/whl/cu128), run with `--gpus all` and set
# NEURFLOW_DEVICES=cuda:0,cuda:1 (one worker process per device). Nothing else changes.
FROM python:3.11-slim AS base

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# torch from the CPU wheel index first (keeps the CUDA wheels out of the image), then the package.
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
RUN pip install --index-url https://download.pytorch.org/whl/cpu \
        torch==${TORCH_VERSION} torchvision==${TORCHVISION_VERSION}

COPY pyproject.toml README.md ./
# the installed package is neurflow.* only; these folders map onto its subpackages (pyproject.toml)
COPY neurflow ./neurflow
COPY core ./core
COPY prompts ./prompts
COPY labeler ./labeler
COPY exports ./exports
COPY viewer ./viewer
COPY world ./world
COPY service ./service
RUN pip install ".[service,clip]"

RUN useradd --create-home --uid 10001 neurflow \
    && mkdir -p /data /assets \
    && chown neurflow:neurflow /data
USER neurflow

ENV NEURFLOW_HOST=0.0.0.0 \
    NEURFLOW_PORT=8000 \
    NEURFLOW_DATA_DIR=/data \
    NEURFLOW_ASSET_DIRS=/assets \
    HF_HUB_OFFLINE=1

VOLUME ["/data"]
EXPOSE 8000

HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4).status == 200 else 1)"

CMD ["neurflow", "serve"]
