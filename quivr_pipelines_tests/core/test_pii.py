"""PII detection runs offline (network cut in a fresh interpreter), finds what it claims, and
masks with typed placeholders."""

import json
import subprocess
import sys

import pytest

from quivr_pipelines.core import pii

SAMPLE = ("Contact John Smith at john.smith@example.com or on +44 20 7946 0958. "
          "He paid with card 4111 1111 1111 1111; his IBAN is GB82 WEST 1234 5698 7654 32.")
FOUND = {"PERSON": 1, "EMAIL_ADDRESS": 1, "PHONE_NUMBER": 1, "CREDIT_CARD": 1, "IBAN_CODE": 1}

# Every connection and name lookup that does not stay on this machine is refused and recorded,
# before anything is imported.
NETWORK_CUT = """
import json, socket, sys
attempts = []
LOCAL = ("127.", "::1", "localhost", "/")
real_connect, real_getaddrinfo = socket.socket.connect, socket.getaddrinfo
def connect(self, address):
    host = address if isinstance(address, str) else str(address[0])
    if not host.startswith(LOCAL):
        attempts.append(("connect", host))
        raise OSError("network cut by the test")
    return real_connect(self, address)
def getaddrinfo(host, *args, **kwargs):
    if host is not None and not str(host).startswith(LOCAL):
        attempts.append(("getaddrinfo", str(host)))
        raise socket.gaierror("network cut by the test")
    return real_getaddrinfo(host, *args, **kwargs)
socket.socket.connect, socket.getaddrinfo = connect, getaddrinfo
"""

OFFLINE_PROBE = NETWORK_CUT + """
from quivr_pipelines.core import pii
[detected] = pii.scrub([sys.argv[1]], "detect")
[masked] = pii.scrub([sys.argv[1]], "mask")
print(json.dumps({"detected": detected.entities, "unchanged": detected.text == sys.argv[1],
                  "masked": masked.text, "attempts": attempts}))
"""

# The defect the explicit configuration avoids: presidio's stock e-mail check (tldextract's
# default extractor, here with an empty cache) goes to the network for the public suffix list.
STOCK_EMAIL_PROBE = NETWORK_CUT + """
from presidio_analyzer.predefined_recognizers import EmailRecognizer
EmailRecognizer().validate_result("john.smith@example.com")
print(json.dumps({"attempts": attempts}))
"""


def run_probe(code: str, tmp_path, *args: str) -> dict:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "TLDEXTRACT_CACHE": str(tmp_path / "tld"),
           "XDG_CACHE_HOME": str(tmp_path / "cache")}
    done = subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.splitlines()[-1])


def test_stock_email_recognizer_reaches_for_the_network(tmp_path):
    assert run_probe(STOCK_EMAIL_PROBE, tmp_path)["attempts"]


def test_detection_and_masking_run_with_the_network_cut(tmp_path):
    result = run_probe(OFFLINE_PROBE, tmp_path, SAMPLE)
    assert result["attempts"] == []
    assert result["detected"] == FOUND and result["unchanged"]
    assert result["masked"] == ("Contact <PERSON> at <EMAIL_ADDRESS> or on <PHONE_NUMBER>. He paid with card "
                                "<CREDIT_CARD>; his IBAN is <IBAN_CODE>.")


def test_default_presidio_model_is_not_installed_and_not_needed():
    """presidio's default NLP configuration names en_core_web_lg and downloads it when missing;
    ours names the pipeline the project ships."""
    import spacy

    assert not spacy.util.is_package("en_core_web_lg")
    assert spacy.util.is_package(pii.SPACY_PACKAGE)


@pytest.mark.parametrize("text, entities", [
    ("Write to maria.garcia@example.org today.", {"EMAIL_ADDRESS": 1}),
    ("Call (212) 555-0187 after nine.", {"PHONE_NUMBER": 1}),
    ("Transfer to DE89 3704 0044 0532 0130 00 please.", {"IBAN_CODE": 1}),
    ("Card 5500 0000 0000 0004 expires soon.", {"CREDIT_CARD": 1}),
    ("Card 4111 1111 1111 1112 is not valid.", {}),  # fails the checksum: not a card number
    ("Norwich City is a football club based in Norwich, Norfolk, founded in 1902.", {}),
    ("Reach us at 212.555.0187 any day.", {"PHONE_NUMBER": 1}),
    # Spreadsheet cells, table rows, ISBNs and URL paths that presidio's stock recognizers took for
    # phone numbers, identifiers taken for names (2,267 "phone numbers" in 39 sample documents of
    # ../shared/data/docs before the shape rules).
    ("0.285021097,030716119,0.296319737,084662173", {}),
    ("Revenue 197 -5 -140 -414 and 2548 422 418 3318 432 372", {}),  # a table row
    ("Rollin, Jack (1995). ISBN 0-356-17910-9. See /news/11737/2311982/ too.", {"PERSON": 1}),
    ("Our offices: ( 702 ) 939-3254.", {"PHONE_NUMBER": 1}),
    ("CD4Teff4EBP1Unstim,2Unstim CD4TmemCD38Ki67Ki67Unstim,2Unstim GZMH,6Prot HPGDS,6Prot", {}),
])
def test_what_is_found_and_what_is_left_alone(text, entities):
    [result] = pii.scrub([text], pii.PiiMode.DETECT)
    assert result.entities == entities and result.text == text


def test_the_shape_rules_fix_what_the_stock_recognizers_find():
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    cells = "0.285021097,030716119,0.296319737,084662173"
    assert len(PhoneRecognizer().analyze(cells, ["PHONE_NUMBER"])) >= 2  # the stock recognizer
    assert pii.scrub([cells], "detect")[0].entities == {}


def test_mask_keeps_text_without_entities_and_counts_per_text():
    texts = [SAMPLE, "Nothing personal here.", ""]
    masked = pii.scrub(texts, "mask")
    assert [m.entities for m in masked] == [FOUND, {}, {}]
    assert masked[1].text == texts[1] and masked[2].text == ""
    assert not any(s in masked[0].text for s in ("John", "john.smith", "7946", "4111", "GB82"))
    assert pii.total(masked + masked) == {k: 2 * v for k, v in sorted(FOUND.items())}


def test_off_analyses_nothing():
    assert pii.scrub([SAMPLE], "off") == [pii.Scrubbed(SAMPLE, {})]
    with pytest.raises(ValueError):
        pii.scrub([SAMPLE], "redact")
