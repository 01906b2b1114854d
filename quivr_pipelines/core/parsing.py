"""PLACEHOLDER"""
from dataclasses import dataclass
@dataclass
class ParsedDocument:
    elements: list
    page_count: int | None
    content_type: str | None

def parse_document(data, key, content_type):
    from unstructured.partition.text import partition_text
    return ParsedDocument(partition_text(text=data.decode()), None, content_type)
