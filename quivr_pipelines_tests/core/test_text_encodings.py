"""Every text-like format goes through one decoder: BOMs (UTF-8/16/32, both byte orders), then a
declared charset, then strict UTF-8, then charset-normalizer (issue 10, item 1).

Each file is built here with a known sentence in non-ASCII letters; before the decoder a cp1252
HTML page came out as "nińo", a UTF-16 CSV raised UnicodeDecodeError and UTF-32 text was refused
as binary garbage."""

import codecs
import json

import pytest

from quivr_pipelines.core.parsing import parse_document
from quivr_pipelines.core.parsing.text import decode_text

SENTENCE = "El niño y la señora toman café en Ærøskøbing"
CSV = f"city,remark\nÆrøskøbing,{SENTENCE}\n"
TEXT = f"{SENTENCE}.\n\nA second paragraph about the harbour.\n"
HTML_1252 = ('<html><head><meta charset="windows-1252"><title>Visit</title></head>'
             f"<body><p>{SENTENCE}.</p></body></html>")
HTML_HTTP_EQUIV = ('<html><head><meta http-equiv="Content-Type" content="text/html; charset=iso-8859-1">'
                   f"</head><body><p>{SENTENCE}.</p></body></html>")
XHTML_LATIN1 = ('<?xml version="1.0" encoding="ISO-8859-1"?>\n<html xmlns="http://www.w3.org/1999/xhtml">'
                f"<body><p>{SENTENCE}.</p></body></html>")
XML_LATIN1 = f'<?xml version="1.0" encoding="ISO-8859-1"?>\n<notes><note>{SENTENCE}.</note></notes>\n'

CASES = {
    "utf16le-bom.csv": codecs.BOM_UTF16_LE + CSV.encode("utf-16-le"),
    "utf16be-bom.csv": codecs.BOM_UTF16_BE + CSV.encode("utf-16-be"),
    "utf16le-bom.tsv": codecs.BOM_UTF16_LE + CSV.replace(",", "\t").encode("utf-16-le"),
    "utf32le-bom.txt": codecs.BOM_UTF32_LE + TEXT.encode("utf-32-le"),
    "utf32be-bom.txt": codecs.BOM_UTF32_BE + TEXT.encode("utf-32-be"),
    "cp1252-meta.html": HTML_1252.encode("cp1252"),
    "latin1-http-equiv.html": HTML_HTTP_EQUIV.encode("iso-8859-1"),
    "latin1-xhtml.html": XHTML_LATIN1.encode("iso-8859-1"),
    "latin1-declared.xml": XML_LATIN1.encode("iso-8859-1"),
    "utf8-bom.md": codecs.BOM_UTF8 + f"# Visit\n\n{SENTENCE}.\n".encode(),
    "utf16be-bom.md": codecs.BOM_UTF16_BE + f"# Visit\n\n{SENTENCE}.\n".encode("utf-16-be"),
    "cp1252-undeclared.txt": TEXT.encode("cp1252"),
    # Short undeclared Western text: a bare detector says cp1250 ("nińo") or Big5.
    "cp1252-short.md": f"{SENTENCE}\n".encode("cp1252"),
    "cp1252-short.csv": f"id,remark\n1,{SENTENCE}\n".encode("cp1252"),
    "utf32le-bom.json": codecs.BOM_UTF32_LE + f'{{"remark": "{SENTENCE}"}}'.encode("utf-32-le"),
}


@pytest.mark.parametrize("key", sorted(CASES))
def test_sentence_survives_encoding(key):
    parsed = parse_document(CASES[key], f"docs/{key}")
    text = "\n".join(e.text for e in parsed.elements)
    if key.endswith(".json"):  # unstructured writes JSON elements back with \u escapes, UTF-8 or not
        text = json.loads(text)["remark"]
    assert SENTENCE in text, text[:300]


@pytest.mark.parametrize("data, expected", [
    (codecs.BOM_UTF32_LE + "ñ".encode("utf-32-le"), "ñ"),  # UTF-32 LE's BOM starts with UTF-16 LE's
    (codecs.BOM_UTF32_BE + "ñ".encode("utf-32-be"), "ñ"),
    (codecs.BOM_UTF8 + "ñ".encode(), "ñ"),
    ("señora".encode(), "señora"),
    ('<meta charset="windows-1252">café'.encode("cp1252"), '<meta charset="windows-1252">café'),
    ('<meta charset="no-such-codec">café'.encode(), '<meta charset="no-such-codec">café'),
])
def test_decode_text(data, expected):
    assert decode_text(data) == expected
