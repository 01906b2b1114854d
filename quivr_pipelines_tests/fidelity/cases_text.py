"""Text-like formats (issue 10, item 1): encodings the one decoder reads, and characters the
fidelity layer (`core/parsing/fidelity.py`) repairs. Each sentence is written as a reader types
it; the file holds it in the form that was once lost."""

import codecs
import json

from quivr_pipelines_tests.fidelity import FidelityCase

CSV_SENTENCE = "The ferry from Ærøskøbing leaves the harbour at noon"
CSV_BE_SENTENCE = "Smørrebrød is served in Ålborg's fish hall on Fridays"
UTF32_SENTENCE = "Die Bäckerin in Göttingen backt süße Brötchen"
HTML_SENTENCE = "El niño y la señora cruzan el puente de Logroño"
LIGATURE_SENTENCE = "The beneficiary unified the difficulties of the flotilla"
LIGATURE_TEXT = "The bene\ufb01ciary uni\ufb01ed the di\ufb03culties of the \ufb02otilla"
CONTROL_SENTENCE = "The cartographer redrew the coastline of the archipelago"
JSON_SENTENCE = "El pingüino bebió agua fría en Málaga"
NDJSON_SENTENCE = "Le hérisson traversa la forêt près de Besançon"
EMAIL_SENTENCE = "La panadera cobró 5 € por el “pan dulce” de Cádiz"
MISDECLARED_SENTENCE = "Il pescatore di Chioggia vendé le triglie al mercato"


def _csv(sentence: str, codec: str, bom: bytes) -> bytes:
    return bom + f"place,remark\nDenmark,{sentence}\n".encode(codec)


def _html_cp1252() -> bytes:
    return ('<html><head><meta charset="windows-1252"><title>Puente</title></head>'
            f"<body><p>{HTML_SENTENCE}.</p></body></html>").encode("cp1252")


def _controls() -> bytes:
    # NUL, BEL, ESC, DEL, a BOM, a zero-width space and a soft hyphen inside the words.
    return ("Survey notes\n\nThe carto\x00grapher re\x07drew the coast\x1bline of the"
            " archi\x7fpe\ufeffla\u00adgo\u200b.\n").encode()


def _email(charset: str, body: str, body_codec: str) -> bytes:
    return (b"From: Panaderia <pan@example.com>\r\nTo: cliente@example.com\r\nSubject: Recibo\r\n"
            b"MIME-Version: 1.0\r\nContent-Type: text/plain; charset=\"" + charset.encode()
            + b"\"\r\nContent-Transfer-Encoding: 8bit\r\n\r\n" + body.encode(body_codec) + b"\r\n")


CASES = [
    FidelityCase(
        name="text-utf16le-bom.csv",
        build=lambda: _csv(CSV_SENTENCE, "utf-16-le", codecs.BOM_UTF16_LE),
        sentence=CSV_SENTENCE,
        defect="UTF-16 CSV raised UnicodeDecodeError in unstructured's CSV reader",
    ),
    FidelityCase(
        name="text-utf16be-bom.csv",
        build=lambda: _csv(CSV_BE_SENTENCE, "utf-16-be", codecs.BOM_UTF16_BE),
        sentence=CSV_BE_SENTENCE,
        defect="UTF-16 BE CSV raised UnicodeDecodeError in unstructured's CSV reader",
    ),
    FidelityCase(
        name="text-utf32le-bom.txt",
        build=lambda: codecs.BOM_UTF32_LE + f"Backstube\n\n{UTF32_SENTENCE}.\n".encode("utf-32-le"),
        sentence=UTF32_SENTENCE,
        defect="UTF-32 text was refused as binary garbage (NUL bytes)",
    ),
    FidelityCase(
        name="text-cp1252-meta.html",
        build=_html_cp1252,
        sentence=HTML_SENTENCE,
        defect='a cp1252 page declaring windows-1252 came out as "nińo" (guessed cp1250)',
    ),
    FidelityCase(
        name="text-ligatures.txt",
        build=lambda: f"Minutes\n\n{LIGATURE_TEXT}.\n".encode(),
        sentence=LIGATURE_SENTENCE,
        defect="ligature code points (U+FB01 fi, U+FB02 fl, U+FB03 ffi) stayed single characters",
    ),
    FidelityCase(
        name="text-controls.txt",
        build=_controls,
        sentence=CONTROL_SENTENCE,
        defect="NUL, control characters, a BOM, a soft hyphen and a zero-width space split the words",
    ),
    FidelityCase(
        name="text-letter-spaced.txt",
        build=lambda: (b"Q U A R T E R L Y   H A R V E S T   L E D G E R\n\n"
                       b"The apple growers weighed every crate at the cider press.\n"),
        sentence="QUARTERLY HARVEST LEDGER",
        defect='a letter-spaced heading stayed one-letter words ("Q U A R T E R L Y")',
    ),
    FidelityCase(
        name="text-letter-spaced-heading.md",
        build=lambda: b"# C H R O N I C L E\n\nThe glassblowers guild met in the old mill.\n",
        sentence="CHRONICLE The glassblowers guild met in the old mill.",
        defect='a letter-spaced heading stayed one-letter words ("C H R O N I C L E")',
    ),
    FidelityCase(
        name="text-nonascii.json",
        build=lambda: json.dumps({"id": 7, "remark": JSON_SENTENCE}).encode(),
        sentence=JSON_SENTENCE,
        defect='unstructured wrote the JSON element with escapes: "ping\\u00fcino"',
    ),
    FidelityCase(
        name="text-nonascii.ndjson",
        build=lambda: (json.dumps({"id": 1, "remark": NDJSON_SENTENCE}) + "\n"
                       + json.dumps({"id": 2, "remark": "Deuxième ligne"}) + "\n").encode(),
        sentence=NDJSON_SENTENCE,
        defect='unstructured wrote the NDJSON elements with escapes: "h\\u00e9risson"',
    ),
    FidelityCase(
        name="text-latin1-declared.eml",
        build=lambda: _email("iso-8859-1", f"Hola,\r\n\r\n{EMAIL_SENTENCE}.\r\n", "cp1252"),
        sentence=EMAIL_SENTENCE,
        defect="a cp1252 body declared iso-8859-1: the euro sign and quotes became C1 controls",
    ),
    FidelityCase(
        name="text-cp1252-declared-utf8.eml",
        build=lambda: _email("utf-8", f"Ciao,\r\n\r\n{MISDECLARED_SENTENCE}.\r\n", "cp1252"),
        sentence=MISDECLARED_SENTENCE,
        defect='a cp1252 body declared utf-8 read as "vend\\ufffd"',
    ),
]
