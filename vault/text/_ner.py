"""Optional named-entity recognizers for names and addresses (spaCy, or Presidio over spaCy).

Names and street addresses have no pattern or checksum, so only a statistical model finds them.
Neither spaCy, Presidio nor a model is a dependency of the vault: these adapters import them
lazily, and :func:`load_ner_recognizer` returns ``None`` when they are absent, so the service
can report ``name`` and ``address`` as not covered instead of failing. Nothing here downloads a
model: a model must be installed as a package (``en_core_web_sm`` and so on).

Entity labels map onto the vault's classes approximately: spaCy's and Presidio's location
entities (GPE, LOC, FAC, LOCATION) are places and streets but seldom a whole postal address, so
a detected ``address`` span may cover only the town of an address.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import Any, Final, Protocol

from vault.text._span import ADDRESS, NAME, Span

#: spaCy entity label -> field class.
SPACY_LABELS: Final[Mapping[str, str]] = MappingProxyType(
    {"PERSON": NAME, "GPE": ADDRESS, "LOC": ADDRESS, "FAC": ADDRESS}
)
#: Presidio entity type -> field class.
PRESIDIO_ENTITIES: Final[Mapping[str, str]] = MappingProxyType(
    {"PERSON": NAME, "LOCATION": ADDRESS}
)
#: English spaCy pipelines tried by :func:`load_ner_recognizer`, most accurate first.
SPACY_MODELS: Final = ("en_core_web_trf", "en_core_web_lg", "en_core_web_md", "en_core_web_sm")


class NerUnavailable(RuntimeError):
    """The NER package or model asked for is not installed."""


class _Entity(Protocol):
    @property
    def start_char(self) -> int: ...
    @property
    def end_char(self) -> int: ...
    @property
    def label_(self) -> str: ...


class _Doc(Protocol):
    @property
    def ents(self) -> Sequence[_Entity]: ...


class _Pipeline(Protocol):
    def __call__(self, text: str) -> _Doc: ...


class _Result(Protocol):
    @property
    def start(self) -> int: ...
    @property
    def end(self) -> int: ...
    @property
    def entity_type(self) -> str: ...


class _Analyzer(Protocol):
    def analyze(self, *, text: str, language: str, entities: list[str]) -> Sequence[_Result]: ...


def _installed(module: str) -> bool:
    """Whether ``module`` can be imported, without importing it."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _spans(
    found: Sequence[tuple[int, int, str]], labels: Mapping[str, str], detector: str, size: int
) -> list[Span]:
    """Spans for the entities whose label maps to a class, inside the text, non-empty."""
    return [
        Span(start, end, labels[label], detector)
        for start, end, label in found
        if label in labels and 0 <= start < end <= size
    ]


class SpacyRecognizer:
    """Names and addresses from the entities of a spaCy pipeline."""

    def __init__(
        self,
        nlp: _Pipeline,
        *,
        labels: Mapping[str, str] = SPACY_LABELS,
        name: str = "spacy",
    ) -> None:
        """
        Args:
            nlp: a loaded pipeline (``spacy.load(...)``) or anything called the same way.
            labels: entity label -> field class; other labels are ignored.
            name: the detector name recorded in spans.
        """
        self._nlp = nlp
        self._labels: Final = MappingProxyType(dict(labels))
        self.name: Final = name
        self.field_classes: Final = frozenset(self._labels.values())

    @classmethod
    def from_model(cls, model: str = "en_core_web_sm") -> SpacyRecognizer:
        """Load an installed spaCy model package.

        Raises:
            NerUnavailable: spaCy or the model package is not installed.
        """
        if not _installed("spacy") or not _installed(model):
            raise NerUnavailable(f"spaCy model {model!r} is not installed")
        spacy: Any = importlib.import_module("spacy")
        # Only the entity recognizer is needed; the parser and lemmatizer cost time per text.
        nlp = spacy.load(model, disable=["parser", "lemmatizer", "tagger", "attribute_ruler"])
        return cls(nlp)

    def find(self, text: str) -> list[Span]:
        doc = self._nlp(text)
        found = [(ent.start_char, ent.end_char, ent.label_) for ent in doc.ents]
        return _spans(found, self._labels, self.name, len(text))


class PresidioRecognizer:
    """Names and addresses from Microsoft Presidio's analyzer (PERSON and LOCATION)."""

    def __init__(
        self,
        analyzer: _Analyzer,
        *,
        language: str = "en",
        entities: Mapping[str, str] = PRESIDIO_ENTITIES,
        name: str = "presidio",
    ) -> None:
        """
        Args:
            analyzer: a ``presidio_analyzer.AnalyzerEngine`` or anything called the same way.
            language: the language code passed to ``analyze``.
            entities: Presidio entity type -> field class; only these are asked for.
            name: the detector name recorded in spans.
        """
        self._analyzer = analyzer
        self._language: Final = language
        self._entities: Final = MappingProxyType(dict(entities))
        self.name: Final = name
        self.field_classes: Final = frozenset(self._entities.values())

    @classmethod
    def from_spacy_model(cls, model: str = "en_core_web_lg") -> PresidioRecognizer:
        """An analyzer over an installed spaCy model package.

        The model is named explicitly: Presidio's default engine would try to download
        ``en_core_web_lg`` when it is missing.

        Raises:
            NerUnavailable: Presidio, spaCy or the model package is not installed.
        """
        if not _installed("presidio_analyzer") or not _installed("spacy") or not _installed(model):
            raise NerUnavailable(f"Presidio over spaCy model {model!r} is not installed")
        presidio: Any = importlib.import_module("presidio_analyzer")
        nlp_engine: Any = importlib.import_module("presidio_analyzer.nlp_engine")
        provider = nlp_engine.NlpEngineProvider(
            nlp_configuration={
                "nlp_engine_name": "spacy",
                "models": [{"lang_code": "en", "model_name": model}],
            }
        )
        analyzer = presidio.AnalyzerEngine(
            nlp_engine=provider.create_engine(), supported_languages=["en"]
        )
        return cls(analyzer)

    def find(self, text: str) -> list[Span]:
        results = self._analyzer.analyze(
            text=text, language=self._language, entities=sorted(self._entities)
        )
        found = [(r.start, r.end, r.entity_type) for r in results]
        return _spans(found, self._entities, self.name, len(text))


def load_ner_recognizer(
    models: Sequence[str] = SPACY_MODELS, *, prefer_presidio: bool = True
) -> SpacyRecognizer | PresidioRecognizer | None:
    """The best NER recognizer installed here, or ``None`` if there is none.

    Uses the first of ``models`` installed as a package; through Presidio if it is installed and
    ``prefer_presidio``, else spaCy directly. Nothing is downloaded.

    Raises:
        Whatever spaCy or Presidio raise when an installed model fails to load: a broken install
        should stop the server at start, not silently leave names uncovered.
    """
    if not _installed("spacy"):
        return None
    model = next((m for m in models if _installed(m)), None)
    if model is None:
        return None
    if prefer_presidio and _installed("presidio_analyzer"):
        return PresidioRecognizer.from_spacy_model(model)
    return SpacyRecognizer.from_model(model)


#: ``[text] ner`` values: no model, a spaCy package, or Presidio (over the first installed
#: model of :data:`SPACY_MODELS`, or ``presidio:<package>``).
NER_SETTINGS_HELP: Final = '"none", "spacy:<package>", "presidio" or "presidio:<package>"'


@functools.cache
def load_ner(setting: str) -> SpacyRecognizer | PresidioRecognizer | None:
    """The recognizer a ``[text] ner`` setting names, loaded once per process (cached).

    Raises:
        ValueError: the setting is not one of :data:`NER_SETTINGS_HELP`.
        NerUnavailable: the package or model it names is not installed.
    """
    kind, _, package = setting.partition(":")
    if setting == "none":
        return None
    if kind == "spacy" and package:
        return SpacyRecognizer.from_model(package)
    if kind == "presidio":
        if package:
            return PresidioRecognizer.from_spacy_model(package)
        model = next((m for m in SPACY_MODELS if _installed(m)), None)
        if model is None:
            raise NerUnavailable("Presidio needs an installed spaCy model package")
        return PresidioRecognizer.from_spacy_model(model)
    raise ValueError(f"[text] ner must be {NER_SETTINGS_HELP}")
