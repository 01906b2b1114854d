"""The partitions of `indexed_documents`: one per knowledge base, whatever its size.

Documents are not partitions: a deployment with millions of documents would have millions of
partitions (Dagster advises staying under about 100,000 per asset; at 2,000,000 the sensor's
partition listing takes ~5 s a tick and each materialization ~17 ms). The catalog keeps the
per-document record; a KB partition's materialization and checks summarise it.
"""

import dagster as dg

kb_partitions = dg.DynamicPartitionsDefinition(name="knowledge_bases")
