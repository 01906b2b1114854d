"""The text-fidelity layer (issue 10, item 1): each transformation of `clean_text`, what it must
leave alone, and that `parse_document` applies it to every format's elements.

Before the layer a PDF set in a font with ligature glyphs gave "beneﬁciary" (U+FB01), which no
query for "beneficiary" matches; JSON elements held "ni\\u00f1o"; e-mail bodies in cp1252 read
as "ni\\ufffdo"; "S U M M A R Y" stayed seven one-letter words."""

import codecs
import json
import unicodedata

import pytest

from quivr_pipelines.core.errors import ErrorType, IngestionError
from quivr_pipelines.core.parsing import parse_document
from quivr_pipelines.core.parsing.fidelity import (
    LAST_DECOMPOSED,
    clean_elements,
    clean_text,
    readable_json,
)


@pytest.mark.parametrize("raw, expected", [
    ("The bene\ufb01ciary uni\ufb01ed the di\ufb03culties", "The beneficiary unified the difficulties"),
    ("\ufb02ow, e\ufb00ort, ba\ufb04e, \ufb05ep", "flow, effort, baffle, step"),
    ("\u0133s", "ijs"),  # Dutch "ĳ"
    ("\uff26\uff55\uff4c\uff4c\u3000\uff37\uff49\uff44\uff54\uff48\uff01", "Full Width!"),
    ("\uff76\uff80\uff76\uff85", "カタカナ"),  # half-width katakana
    ("\ufee3\ufeae\ufea3\ufe92\ufe8e", "مرحبا"),  # Arabic presentation forms from a PDF
    ("\ufefb", "لا"),  # lam-alef ligature
    ("\U0001d401\U0001d428\U0001d425\U0001d41d", "Bold"),  # mathematical bold letters
    ("10\u00a0000\u2009km\u202fkm", "10 000 km km"),
    ("Chapter \u216b", "Chapter XII"),
    ("\u2f00\u2f06", "一二"),  # Kangxi radicals for ideographs
    ("Congre\u017fs", "Congress"),
    ("caf\u0065\u0301 \u1112\u1161\u11ab", "café 한"),  # NFC composes decomposed accents and Hangul
])
def test_compatibility_forms_become_the_letters_a_reader_types(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize("kept", [
    "10³ m² H₂O",  # NFKC: "103 m2", a different number
    "1º 2ª",  # NFKC: "1o 2a"
    "Acme™",  # NFKC: "AcmeTM"
    "½ cup",  # NFKC: "1⁄2"
    "① ② ③",  # list markers
    "don´t ¨",  # NFKC: a space and a combining accent, the word broken
    "ㅋㅋㅋ ㄱㄴ",  # Hangul compatibility jamo; NFKC makes conjoining jamo
])
def test_compatibility_classes_that_change_meaning_are_kept(kept):
    assert clean_text(kept) == kept


@pytest.mark.parametrize("raw, expected", [
    ("a\x00b\x01c\x1fd\x7fe", "abcde"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),
    ("one\r\ntwo\rthree", "one\ntwo\nthree"),
    ("page\x0cbreak\x0bline\u2028sep\u2029para", "page\nbreak\nline\nsep\npara"),
    ("\ufeffBOM at the start, \ufeffand inside", "BOM at the start, and inside"),
    ("bene\u00adficiary", "beneficiary"),
    ("bene\u00ad\nficiary", "beneficiary"),  # a soft hyphen at a line break: the word continues
    ("zero\u200bwidth word\u2060joiner", "zerowidth wordjoiner"),
    ("lone \ud800surrogate", "lone surrogate"),
    ("non\ufffecharacter\ufdd0", "noncharacter"),
    ("\x93quoted\x94 \x96 5\x80", "\u201cquoted\u201d \u2013 5\u20ac"),  # cp1252 read as latin-1
])
def test_characters_that_are_not_text_are_removed_or_mapped(raw, expected):
    assert clean_text(raw) == expected


@pytest.mark.parametrize("text", [
    "한국어 문서는 그대로 읽혀야 합니다. 서울특별시 강남구",
    "Les élèves ont étudié à l'école; où est le cœur? « Très bien » dit-elle.",
    "مرحبا بالعالم، هذا نص عربي مع تشكيل: كَتَبَ",
    "می\u200cخواهم به خانه بروم",  # Persian: ZWNJ inside the word
    "क्\u200dष और क्\u200cष",  # Devanagari: ZWJ and ZWNJ select the conjunct
    "👨\u200d👩\u200d👧\u200d👦 👍🏽 🏳️\u200d🌈 1️⃣ 🇫🇷",  # ZWJ sequences, skin tone, VS16, keycap, flag
    "🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",  # England: tag characters
    "עברית \u200fמימין\u200f לשמאל",  # bidi marks
    "日本語のテキスト、全角句読点。中 文 文 本",  # caseless script with spaces between characters
    "나 는 그 를 본 다",  # Korean one-syllable words, single spaces
    "\ue000 private use",
    "broken \ufffd stays visible",
])
def test_other_scripts_and_emoji_stay_as_they_are(text):
    assert unicodedata.is_normalized("NFC", text)
    assert clean_text(text) == text


@pytest.mark.parametrize("text", [
    "The lighthouse keeper logs every passing tanker at dawn.  Then he sleeps.",
    "I a m not letter-spaced text, and I  a m neither.",
    "Choose A B C D or E on the answer sheet.",
    "Grades: A B C D F",
    "Plan A  B and C; vectors a b c d; i j k",
    "x = a b  c d",
    "MARKS: X X X X",
    "S u m m a r y",  # mixed case, even gaps: which letters make a word is a guess
    "A short word, a list of letters a, b, c, d.",
    "Path C:\\Users\\me and {\"json\": \"\\u00f1\"}",
])
def test_ordinary_text_is_unchanged(text):
    assert clean_text(text) == text


@pytest.mark.parametrize("raw, expected", [
    ("S U M M A R Y", "SUMMARY"),
    ("R E P O R T  O N  S A L E S", "REPORT ON SALES"),
    ("R E P O R T   O N   S A L E S", "REPORT ON SALES"),
    ("T h e  b e n e f i c i a r y", "The beneficiary"),
    ("S U M M A R Y The regional office reported growth.", "SUMMARY The regional office reported growth."),
    ("S U M M A R Y A new approach", "SUMMARY A new approach"),
    ("Intro\nC O N T E N T S\nChapter one", "Intro\nCONTENTS\nChapter one"),
    ("\uff33 \uff35 \uff2d \uff2d \uff21 \uff32 \uff39", "SUMMARY"),  # full-width, letter-spaced
    ("Κ Ε Φ Α Λ Α Ι Ο", "ΚΕΦΑΛΑΙΟ"),
    ("О Т Ч Ё Т  О  П Р О Д А Ж А Х", "ОТЧЁТ О ПРОДАЖАХ"),
])
def test_letter_spaced_runs_are_joined_where_unambiguous(raw, expected):
    assert clean_text(raw) == expected


def test_compatibility_decompositions_end_before_the_table_limit():
    """The table scans planes 0-2 only; a newer Unicode could put compatibility characters
    further out."""
    import sys

    assert not [hex(c) for c in range(LAST_DECOMPOSED, sys.maxunicode + 1)
                if unicodedata.decomposition(chr(c)).startswith("<")]


def test_readable_json_unescapes_only_unstructureds_pretty_print():
    value = {"remark": "El niño", "emoji": "😀", "control": "a\x00b", "path": "C:\\u00f1"}
    escaped = json.dumps(value, indent=2, sort_keys=True)
    assert "\\u00f1" in escaped
    readable = readable_json(escaped)
    assert "El niño" in readable and "😀" in readable and json.loads(readable) == value
    assert readable_json('A rehydrated element: "ni\\u00f1o"') == 'A rehydrated element: "ni\\u00f1o"'
    assert readable_json('{"compact":"\\u00f1"}') == '{"compact":"\\u00f1"}'


def test_clean_elements_cleans_text_and_indexed_metadata():
    from unstructured.documents.elements import ElementMetadata, NarrativeText

    element = NarrativeText(text="The bene\ufb01ciary\x00 signed.")
    element.metadata = ElementMetadata(subject="Caf\u00e9 \ufb01les\x00", sent_from=["Jos\u0065\u0301 <j@x.org>"])
    [cleaned] = clean_elements([element])
    assert cleaned.text == "The beneficiary signed."
    assert cleaned.metadata.subject == "Café files"
    assert cleaned.metadata.sent_from == ["José <j@x.org>"]


def _pdf(text_bytes: bytes) -> bytes:
    """One page in Helvetica whose encoding names glyphs 1-3 fi, fl and ffi, as a typesetter's
    font does: pdfminer maps the glyph names to U+FB01, U+FB02 and U+FB03."""
    stream = b"BT /F1 12 Tf 72 720 Td (" + text_bytes + b") Tj ET"
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R"
        b" /Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica"
        b" /Encoding << /Type /Encoding /BaseEncoding /WinAnsiEncoding /Differences [1 /fi /fl /ffi] >> >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % number + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


LIGATURE_SENTENCE = "The beneficiary unified the difficulties"
LIGATURE_TEXT = "The bene\ufb01ciary uni\ufb01ed the di\ufb03culties"


def _docx(text: str) -> bytes:
    import io

    import docx

    document = docx.Document()
    document.add_paragraph(text)
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


@pytest.mark.parametrize("key, build", [
    ("ligatures.pdf", lambda: _pdf(b"The bene\x01ciary uni\x01ed the di\x03culties")),
    ("ligatures.txt", lambda: f"{LIGATURE_TEXT}.\n".encode()),
    ("ligatures.md", lambda: f"# Notes\n\n{LIGATURE_TEXT}.\n".encode()),
    ("ligatures.html", lambda: f"<html><body><p>{LIGATURE_TEXT}.</p></body></html>".encode()),
    ("ligatures.csv", lambda: f"id,remark\n1,{LIGATURE_TEXT}\n".encode()),
    ("ligatures.docx", lambda: _docx(f"{LIGATURE_TEXT}.")),
    ("ligatures.json", lambda: json.dumps({"remark": LIGATURE_TEXT}).encode()),
    ("ligatures.eml", lambda: ("From: a@example.com\nSubject: Notes\nContent-Type: text/plain; charset=utf-8\n"
                               f"\n{LIGATURE_TEXT}.\n").encode()),
])
def test_every_format_goes_through_the_layer(key, build):
    parsed = parse_document(build(), f"docs/{key}")
    text = " ".join(e.text for e in parsed.elements)
    assert LIGATURE_SENTENCE in text, text[:300]


@pytest.mark.parametrize("key, data", [
    ("words.json", json.dumps({"remark": "El niño y la señora", "city": "Zürich"}).encode()),
    ("words.ndjson", (json.dumps({"remark": "El niño y la señora"}) + "\n"
                      + json.dumps({"city": "Zürich"}) + "\n").encode()),
    ("words-bom.json", codecs.BOM_UTF16_LE + json.dumps({"remark": "El niño y la señora"}).encode("utf-16-le")),
])
def test_json_words_are_stored_as_letters_not_escapes(key, data):
    text = "\n".join(e.text for e in parse_document(data, f"docs/{key}").elements)
    assert "El niño y la señora" in text and "\\u00" not in text, text


SENTENCE = "El niño y la señora toman café"


def _email(charset: str | None, body: bytes, subject: bytes = b"Caf\xe9 con le\xf1a",
           transfer: str = "8bit") -> bytes:
    content_type = b"text/plain" + (b'; charset="%s"' % charset.encode() if charset else b"")
    return (b"From: Ana <ana@example.com>\r\nTo: bob@example.com\r\nSubject: " + subject
            + b"\r\nMIME-Version: 1.0\r\nContent-Type: " + content_type
            + b"\r\nContent-Transfer-Encoding: " + transfer.encode() + b"\r\n\r\n" + body + b"\r\n")


BODY_1252 = f"{SENTENCE} \u201ccon leche\u201d.".encode("cp1252")


@pytest.mark.parametrize("name, data", [
    ("declared windows-1252", _email("windows-1252", BODY_1252)),
    ("declared iso-8859-1, cp1252 quotes", _email("iso-8859-1", BODY_1252)),
    ("declared utf-8, body cp1252", _email("utf-8", BODY_1252)),
    ("no charset, body cp1252", _email(None, BODY_1252)),
    ("unknown charset label", _email("x-no-such-charset", BODY_1252)),
    ("declared us-ascii, body utf-8", _email("us-ascii", f"{SENTENCE} \u201ccon leche\u201d.".encode())),
    ("quoted-printable cp1252 declared utf-8",
     _email("utf-8", SENTENCE.encode("cp1252").replace(b"\xf1", b"=F1").replace(b"\xe9", b"=E9")
            + b" =93con leche=94.", transfer="quoted-printable")),
])
def test_email_bodies_and_headers_are_decoded_whatever_the_declared_charset(name, data):
    parsed = parse_document(data, "mail/message.eml")
    text = " ".join(e.text for e in parsed.elements)
    assert f"{SENTENCE} \u201ccon leche\u201d." in text, (name, text)
    assert parsed.elements[0].metadata.subject == "Café con leña", name


def test_only_an_email_that_would_be_misread_is_rewritten():
    from quivr_pipelines.core.parsing.detect import normalise_email_bytes

    utf8 = _email("utf-8", f"{SENTENCE}.".encode(), subject=b"=?utf-8?q?Caf=C3=A9?=")
    assert normalise_email_bytes(utf8) == utf8
    cp1252 = _email("utf-8", f"{SENTENCE}.".encode("cp1252"), subject=b"=?utf-8?q?Caf=C3=A9?=")
    rewritten = normalise_email_bytes(cp1252)
    assert rewritten != cp1252 and b"Content-Transfer-Encoding: base64" in rewritten


def test_nul_bytes_are_removed_but_mostly_nul_text_is_still_refused():
    parsed = parse_document(b"The bene\x00ficiary\x00 signed the \x01form.\n", "docs/nul.txt")
    assert [e.text for e in parsed.elements] == ["The beneficiary signed the form."]
    with pytest.raises(IngestionError) as raised:
        parse_document(b"\x00\x00\xff\x10" * 100, "docs/binary.txt")
    assert raised.value.error_type == ErrorType.CORRUPT


def test_an_element_of_control_characters_only_is_dropped():
    parsed = parse_document(b"\x01\x02\x03\n\nA readable paragraph.\n", "docs/controls.txt")
    assert [e.text for e in parsed.elements] == ["A readable paragraph."]
