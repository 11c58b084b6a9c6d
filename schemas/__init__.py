"""The contract between stages: record types, table schemas, keys and configs.

Imports nothing else of unicorpus, so every other package can depend on it.
"""

SCHEMA_VERSION = 2  # 2: raw index column meta -> json, phrase-region links query_key/query_source/key
