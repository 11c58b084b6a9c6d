# The trainer on NVIDIA GPUs: CUDA base image, Python 3.11, unicorpus with its model stack (the `ml` extra,
# as `make` installs it; torch's Linux wheels bring their own CUDA libraries, the base image the driver glue).
#   build:  docker build -f docker/trainer.Dockerfile -t unicorpus-trainer .
#   one node, 8 GPUs:
#           docker run --gpus all --ipc=host -v /data:/data unicorpus-trainer \
#             torchrun --nproc_per_node 8 -m cli.main train --config /data/train.yaml
#   many nodes: the same on every node with --nnodes N --node_rank R --rdzv_backend c10d
#           --rdzv_endpoint HOST0:29400 --rdzv_id RUN and --network host (README "Multi-node training").
# Not built here (no Docker engine on the development machines); the install line is the README's.
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04
ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
RUN apt-get update && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/* && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY pyproject.toml README.md /opt/unicorpus/
COPY schemas /opt/unicorpus/schemas
COPY pipelines /opt/unicorpus/pipelines
COPY retrieval /opt/unicorpus/retrieval
COPY training /opt/unicorpus/training
COPY cli /opt/unicorpus/cli
RUN pip install --no-cache-dir --upgrade pip && pip install --no-cache-dir '/opt/unicorpus[ml,test-models]'
WORKDIR /work
CMD ["unicorpus", "train", "--help"]
