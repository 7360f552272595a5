# ntklab on a GPU: the image's entrypoint is the `ntklab` CLI, so Hydra overrides pass
# straight through, e.g.  docker run --gpus all -v "$PWD/runs:/app/runs" IMAGE model.width=65536
FROM pytorch/pytorch:2.9.0-cuda12.8-cudnn9-runtime

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MPLCONFIGDIR=/tmp/matplotlib

WORKDIR /app

# Only what the package needs (.dockerignore keeps runs/, caches and venvs out).
COPY pyproject.toml README.md constraints.txt ./
COPY ntklab ./ntklab
COPY conf ./conf
COPY hydra_plugins ./hydra_plugins
RUN pip install --no-cache-dir -c constraints.txt . \
    && useradd --create-home --uid 1000 ntklab \
    && mkdir -p /app/runs \
    && chown ntklab:ntklab /app/runs

USER 1000:1000
VOLUME ["/app/runs"]
ENTRYPOINT ["ntklab"]
