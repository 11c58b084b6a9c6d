"""One boto3 S3 client per process for Beam's S3 FileSystem.

Beam's ``S3FileSystem`` builds ``S3IO(options=...)`` for every call (``exists``, ``open``, ``create``, ``rename``,
``match``, ``delete``), and each builds a new boto3 session and client: about 0.25 s of botocore loading its
service model, some 15 times per shard and stage run (measured against a local S3 server answering in ~6 ms).
``share()`` makes every new Beam ``Client`` wrapper reuse the boto3 client made first for the same S3 options in
this process (boto3 clients are thread-safe); the wrapper's own attributes (its download state) stay fresh per
call. Nothing happens where Beam's AWS client or boto3 is not installed.
"""

from __future__ import annotations

import copy
import os
import threading

_FIELDS = ("s3_access_key_id", "s3_secret_access_key", "s3_session_token", "s3_endpoint_url", "s3_disable_ssl",
           "s3_region_name", "s3_api_version", "s3_verify")
_made: dict[tuple, dict] = {}  # (pid, options) -> a wrapper's attributes as its constructor left them
_lock = threading.Lock()


def options_key(options) -> tuple:
    """What a client depends on: the S3 fields of ``options`` (PipelineOptions or a dict, as Beam accepts), and
    the process (a client does not survive a fork: its connection pool would be shared)."""
    from apache_beam.options.pipeline_options import PipelineOptions, S3Options

    view = options.view_as(S3Options) if isinstance(options, PipelineOptions) else None
    values = tuple(getattr(view, name) if view is not None else options.get(name) for name in _FIELDS)
    return (os.getpid(), *values)


def share() -> None:
    """Wrap Beam's boto3 ``Client`` constructor once per process."""
    try:
        from apache_beam.io.aws.clients.s3 import boto3_client
    except ImportError:
        return
    if boto3_client.boto3 is None or getattr(boto3_client.Client.__init__, "shared", False):
        return
    build = boto3_client.Client.__init__

    def __init__(self, options):
        key = options_key(options)
        with _lock:
            made = _made.get(key)
        if made is None:  # the first of this process and options: Beam's own constructor, kept as the model
            build(self, options)
            with _lock:
                _made.setdefault(key, dict(self.__dict__))
            return
        try:
            state = {name: value if name == "client" else copy.deepcopy(value) for name, value in made.items()}
        except (TypeError, copy.Error):  # a later Beam's wrapper holding what cannot be copied: Beam's own way
            build(self, options)
            return
        self.__dict__.update(state)

    __init__.shared = True
    boto3_client.Client.__init__ = __init__
