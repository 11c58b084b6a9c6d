"""Retrieval over the corpus: sentence embeddings (``embed``), FAISS indexes chosen, tuned and built in
shards (``index``, ``index_plan``), and the retrieval recipes built on them (mu-VLA weak alignment,
UNIMO related items). Pure Python over numpy, pyarrow and FAISS: no Beam here, so the service,
notebooks and ``unicorpus query`` use it directly; ``pipelines/`` wraps it in Beam stages.
"""
