# greyelephant images. Two targets share the same install script as CI, each from its lock
# (requirements/cpu.lock, requirements/gpu.lock):
#   docker build --target cpu -t greyelephant:cpu .
#   docker build --target gpu -t greyelephant:gpu .
# Run: docker run -p 8000:8000 greyelephant:cpu   (serves the embedded model)
#      docker run --gpus all -p 8000:8000 greyelephant:gpu

FROM python:3.11-slim-bookworm AS base
ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GREYELEPHANT_CACHE=/opt/greyelephant/cache \
    VENV=/opt/greyelephant/venv
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential libnuma1 make \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /opt/greyelephant/app
COPY pyproject.toml README.md Makefile ./
COPY requirements ./requirements
COPY scripts ./scripts
COPY greyelephant ./greyelephant
COPY server ./server
COPY control ./control
COPY kernels ./kernels
COPY recipe ./recipe
COPY client ./client
COPY benchmarks ./benchmarks
COPY adapters ./adapters

FROM base AS cpu
# torch 2.13.0+cpu is not on PyPI: point pip at the PyTorch CPU index for it.
ENV PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
RUN bash scripts/install.sh cpu
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready')"]
ENTRYPOINT ["/opt/greyelephant/venv/bin/greyelephant", "serve", "--host", "0.0.0.0", "--port", "8000"]

FROM base AS gpu
# requirements/gpu.lock (exact pins, --no-deps, like the CPU lock): upstream vllm==0.32.0
# with its CUDA torch 2.13.0, all wheels from PyPI (manylinux <= 2_31; bookworm has glibc 2.36).
RUN bash scripts/install.sh gpu
EXPOSE 8000
HEALTHCHECK --interval=30s --timeout=5s --start-period=180s CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/ready')"]
ENTRYPOINT ["/opt/greyelephant/venv/bin/greyelephant", "serve", "--host", "0.0.0.0", "--port", "8000"]
