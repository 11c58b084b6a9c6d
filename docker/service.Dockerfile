# The retrieval service (`unicorpus serve`): the sentence-embedding model, FAISS and the HTTP server, on CPUs.
#   build:  docker build -f docker/service.Dockerfile -t unicorpus-service .
#   run:    docker run -p 8765:8765 -v /data/corpus:/data/corpus -v /data/models:/data/models \
#             unicorpus-service --config /data/corpus.yaml --host 0.0.0.0 --port 8765 --token "$TOKEN"
# The corpus config's retrieval.embed.model names the sentence-transformers folder (mounted, never downloaded).
# torch comes from PyTorch's CPU wheel index (the service needs no GPU, and the CUDA wheels are 3 GB more).
# Not built here (no Docker engine on the development machines); the install line is the README's.
FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
COPY pyproject.toml README.md /opt/unicorpus/
COPY schemas /opt/unicorpus/schemas
COPY pipelines /opt/unicorpus/pipelines
COPY retrieval /opt/unicorpus/retrieval
COPY training /opt/unicorpus/training
COPY cli /opt/unicorpus/cli
RUN pip install --no-cache-dir --extra-index-url https://download.pytorch.org/whl/cpu '/opt/unicorpus[ml]'
EXPOSE 8765
ENTRYPOINT ["unicorpus", "serve"]
