# Beam Python SDK worker with unicorpus installed: the image cluster runners start for Python work.
#   build:    docker build -f docker/beam-worker.Dockerfile -t unicorpus-beam-worker .
#   Dataflow: --sdk_container_image=unicorpus-beam-worker (pushed to your registry)
#   Flink/Spark, Docker environment: --environment_type=DOCKER --environment_config=unicorpus-beam-worker
#   Flink/Spark, worker pool beside each task manager:
#             docker run -p 50000:50000 unicorpus-beam-worker --worker_pool
#             then --environment_type=EXTERNAL --environment_config=localhost:50000
# The SDK version must match the apache-beam version the pipeline is submitted with.
FROM apache/beam_python3.11_sdk:2.77.0
COPY pyproject.toml README.md /opt/unicorpus/
COPY schemas /opt/unicorpus/schemas
COPY pipelines /opt/unicorpus/pipelines
COPY retrieval /opt/unicorpus/retrieval
COPY training /opt/unicorpus/training
COPY cli /opt/unicorpus/cli
RUN pip install --no-cache-dir /opt/unicorpus
# NLTK data (punkt for prose sources, WordNet for ImageNet labels and the rewrite filter), found via NLTK_DATA.
RUN apt-get update && apt-get install -y --no-install-recommends wordnet-base wordnet-sense-index \
    && python -m pipelines.nltk_data --into /usr/share/nltk_data && rm -rf /var/lib/apt/lists/*
ENV NLTK_DATA=/usr/share/nltk_data
