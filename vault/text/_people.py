"""Rule-based detectors for names, postal addresses and dates of birth (English, German, French).

Names and addresses have no checksum, so these detectors look for what people write around them:
cue words ("my name is", "Dear", "Mr", a signature after "Regards,", "Name:", "lives at",
"Adresse :", "born", "DOB", "geboren am", "né le") and the shape of the value (capitalised words,
a house number next to a street word, a postcode). No model, no word list download: precise on
what a support message looks like, blind to a bare name in mid-sentence (strict mode, or an NER
recognizer, covers that).
"""

from __future__ import annotations

import re
from typing import Final

from vault.text._common_words import COMMON_WORDS
from vault.text._span import ADDRESS, DATE_OF_BIRTH, NAME, Span

# -- names ----------------------------------------------------------------------------------------

_UP: Final = "A-ZÀ-ÖØ-Þ"
_LO: Final = "a-zà-öø-ÿß"
# "Smith", "McGrath", "O'Brien", "Wright-Warner", "Jean-Luc"
_PART: Final = rf"[{_UP}](?:[{_LO}]|['\u2019][{_UP}]|[{_UP}](?=[{_LO}]))*[{_LO}]"
_PARTICLE: Final = (
    r"(?:van|von|de|der|den|du|des|del|della|di|da|dos|le|la|ten|ter|zu|y|bin|al|'t|\u2019t)"
)
# "Biezenbos-van de Wal": particles may follow a hyphen
_WORD: Final = rf"{_PART}(?:-(?:{_PARTICLE}[ ]){{0,2}}{_PART})*"
_TITLE: Final = (
    r"(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Sir|Herr|Frau|Monsieur|Madame|Mme|Mlle|Sr|Sra|Sig|Dott"
    r"|Dhr|Mevr|Ing|Sig\.ra|Dott\.ssa|Univ\.Prof|Dipl\.-Ing|Dipl\.-Kfm)\.?"
)
_SUFFIX: Final = (
    r"(?:,? (?:Jr\.|Sr\.|Jr|Sr|II|III|IV|V|MD|DDS|DVM|PhD|Ph\.D\.|MBA\.?|B\.(?:Sc|A|Eng)\."
    r"|M\.(?:Sc|A|Eng)\.|Esq\.?)(?![\w.]))"
)
# One to five name words (with particles and initials between them) on one line.
_NAME_CORE: Final = rf"{_WORD}(?:[ ](?:{_PARTICLE}[ ]){{0,2}}(?:{_WORD}|[{_UP}]\.)){{0,5}}"
_NAME: Final = rf"(?:(?i:{_TITLE})[ ]){{0,3}}{_NAME_CORE}{_SUFFIX}?"

#: Words that follow a cue without being a name ("Dear Support", "Hi Team", "I am Writing").
_STOP_WORDS_TEXT: Final = """
    support team sir madam madame monsieur customer customers service services all
    everyone there folks guys friends again thanks thank hello hi dear the a an my our
    your this that it i please sorry still just not so very really also writing calling
    here back from damen herren kundenservice kundendienst team support-team equipe équipe
    service-client messieurs mesdames tous everybody admin administrator manager
    customer-service helpdesk help desk billing sales accounts
"""
STOP_WORDS: Final = frozenset(_STOP_WORDS_TEXT.split())

_GREETING_CUE: Final = (
    r"(?:dear|hi|hello|hey|hallo|liebe|lieber|sehr geehrte|sehr geehrter|bonjour|cher|chère"
    r"|hola|ciao|beste|good morning|good afternoon|guten tag)"
)
_SELF_CUE: Final = (
    r"(?:my name is|my name's|name is|i am|i'm|this is|je m'appelle|je suis|mon nom est"
    r"|ich heiße|ich bin|mein name ist|me llamo|mi nombre es|mi chiamo|mijn naam is|ik ben)"
)
_LABEL_CUE: Final = (
    r"(?:(?:full |first |last |given |family |sur|customer |account |card ?holder )?name"
    r"|account holder|cardholder|card holder|customer|bank details|contact|kontoinhaber(?:in)?"
    r"|inhaber(?:in)?|vorname|nachname|name des kontoinhabers|nom(?: complet)?|prénom"
    r"|titulaire(?: du compte)?|nombre|nome|naam)"
)
_CLOSING_CUE: Final = (
    r"(?:thanks(?: again| so much| a lot)?|thank you(?: so much)?|many thanks|thx|best regards"
    r"|kind regards|warm regards|warmest regards|regards|best wishes|best|cheers|sincerely"
    r"|yours sincerely|yours truly|yours faithfully|all the best|mit freundlichen grüßen"
    r"|mit freundlichen grüssen|freundliche grüße|viele grüße|beste grüße|liebe grüße|lg|mfg"
    r"|gruß|grüße|cordialement|bien cordialement|bien à vous|salutations|sincères salutations"
    r"|merci|merci d'avance|un saludo|saludos|atentamente|gracias|cordiali saluti"
    r"|distinti saluti|saluti|grazie|met vriendelijke groet|vriendelijke groet|groeten|--|—)"
)
# Cues are found in the lower-cased text (case-sensitive patterns over it are several times
# faster than case-blind ones), the name after each in the text as written: it must be
# capitalised.
_CLOSING_LOW: Final = rf"(?:^|(?<=\n))[ \t]*(?:{_CLOSING_CUE})[ \t]*[,!.]?[ \t]*\n?[ \t]*"
_CUE_LOW: Final = re.compile(
    rf"(?<![\w'])(?:{_GREETING_CUE}|{_SELF_CUE})[ \t]+"
    rf"|(?<![\w'])(?:{_LABEL_CUE})[ \t]*[:,]?[ \t]*"
    rf"|(?:^|(?<=\n)|(?<=[.!?] ))[ \t]*(?:{_CLOSING_CUE})[ \t]*[,!.]?[ \t]*\n?[ \t]*"
    rf"|(?<![\w.])(?={_TITLE.lower()}[ ])",
    re.MULTILINE,
)
_CLOSING_CUE_LOW: Final = re.compile(_CLOSING_LOW, re.MULTILINE)
_NAME_AT: Final = re.compile(rf"{_NAME}(?![\w@])")
_NAME_LINE_AT: Final = re.compile(rf"{_NAME}[ \t]*(?=\n|\Z)")


def _lowered(text: str) -> str:
    """``text`` in lower case with the same offsets (a character whose lower case is longer,
    such as "İ", is kept as it is)."""
    low = text.lower()
    if len(low) == len(text):
        return low
    return "".join(c if len(c.lower()) != 1 else c.lower() for c in text)


def _names_after(pattern: re.Pattern[str], name: re.Pattern[str], text: str) -> list[re.Match[str]]:
    """Matches of ``name`` in ``text`` right after each cue ``pattern`` finds in lower case."""
    found: list[re.Match[str]] = []
    for cue in pattern.finditer(_lowered(text)):
        match = name.match(text, cue.end())
        if match is not None:
            found.append(match)
    return found


_WORD_RE: Final = re.compile(_WORD)


def _words(value: str) -> list[str]:
    return _WORD_RE.findall(value)


_TITLE_RE: Final = re.compile(rf"(?i:{_TITLE})[ ]")


def _plausible_name(value: str) -> bool:
    """Its first word after any title is not a stop word (so "Dear Support" is no name)."""
    while (title := _TITLE_RE.match(value)) is not None:
        value = value[title.end() :]
    words = [w.lower() for w in _words(value)]
    return bool(words) and words[0] not in STOP_WORDS


class NameDetector:
    """Person names after cue words, titles and signature closings, and their repetitions."""

    name = "names"
    field_classes: Final = frozenset({NAME})

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        seen: set[str] = set()
        for match in _names_after(_CUE_LOW, _NAME_AT, text):
            start, end = match.span()
            value = text[start:end]
            if _plausible_name(value):
                spans.append(Span(start, end, NAME, self.name))
                seen.add(value)
        # the same full name written again elsewhere in the message
        for value in seen:
            if " " not in value:
                continue
            at = text.find(value)
            while at != -1:
                end = at + len(value)
                if not (at and text[at - 1].isalnum()) and not (
                    end < len(text) and text[end].isalnum()
                ):
                    spans.append(Span(at, end, NAME, self.name))
                at = text.find(value, end)
        return spans


# -- addresses ------------------------------------------------------------------------------------

_EN_STREET: Final = (
    r"(?:Street|St|Road|Rd|Avenue|Ave|Av|Lane|Ln|Drive|Dr|Boulevard|Blvd|Court|Ct|Place|Pl|Way"
    r"|Terrace|Close|Crescent|Parkway|Pkwy|Square|Sq|Highway|Hwy|Circle|Cir|Trail|Row|Mews"
    r"|Gardens|Grove|Walk|Hill|Plaza|Park|Ridge|Green|Gate|Parade|Esplanade|Broadway)"
)
_DE_STREET: Final = (
    r"(?:straße|strasse|str\.|weg|platz|allee|gasse|ring|damm|ufer|chaussee|steig|pfad|markt)"
)
_DE_STREET_WORD: Final = r"(?:Straße|Strasse|Str\.|Weg|Platz|Allee|Gasse|Ring|Damm|Ufer|Markt)"
_FR_STREET: Final = (
    r"(?:rue|avenue|av\.|boulevard|bd|place|chemin|allée|impasse|quai|route|cours|square"
    r"|passage|faubourg)"
)
_HOUSE: Final = r"\d{1,5}[A-Za-z]?(?:[-/]\d{1,4}[A-Za-z]?)?"
# A word takes its hyphens possessively ("*+"): "Ab-Ab-Ab" could otherwise also be read as
# words joined by the "-" separator, 2^n ways for n hyphens, each tried when the tail after the
# city fails (a 100-character line hung a thread). The matches are the same: a word split at a
# hyphen ends where the whole word ends.
_CITY: Final = (
    rf"[{_UP}][\w'\u2019-]*+(?:[ -](?:[{_UP}][\w'\u2019-]*+|sur|sous|am|an|der|de|le|la|en))*"
)
_POSTCODE: Final = (
    r"(?:[A-Z]{1,2}\d[A-Z\d]? ?\d[A-Z]{2}"  # UK
    r"|[A-Z]\d[A-Z] ?\d[A-Z]\d"  # Canada
    r"|(?:[A-Z]{2}[ \t]+)?\d{5}(?:-\d{4})?"  # US state + ZIP, or DE/FR/ES/IT five digits
    r"|\d{4} ?[A-Z]{2})"  # Netherlands
)
_UNIT: Final = (
    r"(?:,? (?:Apt\.?|Apartment|Suite|Ste\.?|Unit|Flat|Floor|Wohnung|Whg\.|Appartement|Bât\.?)"
    r" ?\w{1,5})"
)
# After the street: ", 10115 Berlin", ", London NW1 6XE", ", Springfield, IL 62704".
_TAIL: Final = (
    rf"(?:(?:,[ \t]*|[ \t]+|[ \t]*\n(?={_POSTCODE}[ \t]))"
    rf"(?:{_POSTCODE}[ \t]+{_CITY}|{_CITY}(?:,?[ \t]+{_POSTCODE})"
    rf"|{_CITY}(?:,[ \t]*[A-Z]{{2}})(?:[ \t]+\d{{5}}(?:-\d{{4}})?)?))?"
)
_STREET_WORDS: Final = rf"(?:[{_UP}][\w'\u2019.-]*[ ]){{1,4}}"
# House number first: 221B Baker Street, 12 rue X
_ADDRESS_RE: Final = re.compile(
    rf"(?<![\w.,/-])(?=\d)(?:"
    rf"{_HOUSE},?[ ]{_STREET_WORDS}{_EN_STREET}\b\.?{_UNIT}?"
    rf"|{_HOUSE},?[ ](?i:{_FR_STREET})[ ](?:[\w'\u2019-]+[ ]){{0,4}}?[{_UP}][\w'\u2019-]+"
    rf"){_TAIL}"
)
# Street first (German): Hauptstr. 5, Berliner Straße 12; only run when a street word occurs.
# The optional first word is possessive, as in _CITY: giving back a long hyphenated word one
# hyphen at a time, each followed by a scan for a street word, cost its length squared; the
# street-word scan from the same start finds what a split at a hyphen would.
_DE_ADDRESS_HINT: Final = re.compile(rf"{_DE_STREET}[ ]\d")  # over lower case
_DE_ADDRESS_RE: Final = re.compile(
    rf"(?<![\w.,/-])(?:[{_UP}][\w'\u2019-]*+[ -])?"
    rf"(?:[{_UP}][\w'\u2019-]*?(?i:{_DE_STREET})|{_DE_STREET_WORD})[ ]{_HOUSE}{_TAIL}"
)
# Labels and cues, over the lower-cased text (see _lowered).
_ADDRESS_LABEL: Final = re.compile(
    r"(?<!\w)(?<!email )(?<!e-mail )(?<!ip )(?<!web )"
    r"(?:(?:home |postal |mailing |shipping |billing |delivery |new |street )?address"
    r"|addr\.|adresse(?: postale| de livraison| de facturation)?|anschrift|lieferadresse"
    r"|rechnungsadresse|wohnadresse|dirección|indirizzo|adres)[ \t]*:[ \t]*(?=\S)"
    r"|(?<!\w)(?<!email )(?<!e-mail )(?<!ip )(?<!work )"
    r"(?:lives? at|living at|my address is|address is|i live at|i moved to|moved to"
    r"|ship (?:it |them )?to|deliver (?:it |them )?to"
    r"|wohne (?:in der|in|an der|am|im)|meine adresse (?:ist|lautet)|adresse lautet"
    r"|j'habite(?: au| à| a| dans la)?|mon adresse est|nouvelle adresse est)[ \t]+"
    r"(?=[\d\w])"
)
#: words whose full stop does not end an inline address ("12 Main St. Springfield"), besides
#: a lone capital ("J.")
_ABBREVIATIONS: Final = (
    *("St", "Rd", "Ave", "Av", "Apt", "Dr", "Blvd", "Ln", "Ct", "Pl", "Mt", "Ft", "Hwy", "Pkwy"),
    *("Sq", "No", "Nr", "Str", "str", "Bd", "bd", "av", "Ste"),
)


def _not_an_abbreviation() -> str:
    """Lookbehinds, placed after a full stop, refusing one that ends an abbreviation word: one
    per word length (a lookbehind has a fixed width). Part of the stop pattern, so that one
    search finds the end of an inline address, not a loop in Python over every full stop."""
    by_length: dict[int, list[str]] = {}
    for word in _ABBREVIATIONS:
        by_length.setdefault(len(word), []).append(word)
    behind = [rf"(?<!\b(?:{'|'.join(words)})\.)" for _, words in sorted(by_length.items())]
    return "".join(behind) + r"(?<!\b[A-Z]\.)"


# a sentence's end, a clause, or the next "Label:" on the line
_SENTENCE_STOP: Final = re.compile(
    rf"\.{_not_an_abbreviation()}(?=\s|\Z)"
    r"|[;()!?]| - | and | but | und | et |[ \t][A-Za-z][\w-]*(?:[ \t][a-z]+)?[ \t]?:"
)
_PHONE_LINE: Final = re.compile(r"[\d\s()+./-]+|.*@.*|.*https?://.*")
_TRAILING: Final = " \t,.;:-"
_TRAILING_RUN: Final = re.compile(r"[ \t,.;:\-]*")  # _TRAILING's characters
_BLANKS: Final = re.compile(r"[ \t]*")
#: longest inline address taken after a cue: the ``address`` class's length limit (vault.schema),
#: so a longer span could not be tokenized anyway; it also keeps the search for the end linear
#: in a line of many cues and no sentence end ("lives at 1 lives at 1 ...": 13 s for 64 KiB)
_INLINE_MAX: Final = 1024
#: longest signature block taken as an address
_SIGNATURE_MAX: Final = 200


def _inline_end(text: str, start: int) -> int:
    """Where an inline address after a cue ends: the line's end or its sentence's end, at most
    :data:`_INLINE_MAX` characters on."""
    limit = min(len(text), start + _INLINE_MAX)
    line_end = text.find("\n", start, limit)
    end = limit if line_end == -1 else line_end
    stop = _SENTENCE_STOP.search(text, start, end)
    return end if stop is None else stop.start()


def _run_end(run: re.Pattern[str], text: str, at: int) -> int:
    """Where the run of characters ``run`` matches at ``at`` ends (``at`` if there is none)."""
    match = run.match(text, at)
    return at if match is None else match.end()


def _trimmed(text: str, start: int, end: int) -> tuple[int, int]:
    while end > start and text[end - 1] in _TRAILING:
        end -= 1
    while start < end and text[start] in " \t":
        start += 1
    return start, end


class AddressDetector:
    """Postal addresses: a house number next to a street word (EN/DE/FR) with its postcode and
    town, the text after an address label or cue ("Address:", "lives at", "j'habite"), and the
    address block under a signature's name."""

    name = "addresses"
    field_classes: Final = frozenset({ADDRESS})

    def find(self, text: str) -> list[Span]:
        low = _lowered(text)
        spans = [self._span(m.start(), m.end()) for m in _ADDRESS_RE.finditer(text)]
        if _DE_ADDRESS_HINT.search(low):
            spans.extend(self._span(m.start(), m.end()) for m in _DE_ADDRESS_RE.finditer(text))
        for match in _ADDRESS_LABEL.finditer(low):
            if not (text[match.end()].isdigit() or text[match.end()].isupper()):
                continue  # an address starts with a house number or a capital
            start, end = _trimmed(text, match.end(), _inline_end(text, match.end()))
            value = text[start:end]
            if end > start and "@" not in value and any(c.isdigit() for c in value):
                spans.append(self._span(start, end))
        for match in _names_after(_CLOSING_CUE_LOW, _NAME_LINE_AT, text):
            block = self._signature_block(text, match.end())
            if block is not None:
                spans.append(self._span(*block))
        return [s for s in spans if s is not None]

    def _span(self, start: int, end: int) -> Span:
        return Span(start, end, ADDRESS, self.name)

    @staticmethod
    def _signature_block(text: str, name_end: int) -> tuple[int, int] | None:
        """The lines under a signature's name, up to a blank line, if they read as an address:
        a digit in them, and not a lone phone number, email or URL."""
        if name_end >= len(text) or text[name_end] != "\n":
            return None
        start = _run_end(_BLANKS, text, name_end + 1)
        # Only the first _SIGNATURE_MAX characters can be the block; past them, up to the
        # blank line, only trailing blanks and punctuation may follow. Looking no further
        # keeps a text of many signatures and no blank line linear (it was quadratic: 10 s).
        cut = start + _SIGNATURE_MAX
        blank = text.find("\n\n", start, cut + 1)
        if blank == -1:
            rest = _run_end(_TRAILING_RUN, text, cut)
            if rest < len(text) and not text.startswith("\n\n", rest):
                return None  # longer than _SIGNATURE_MAX
        start, end = _trimmed(text, start, min(cut, len(text)) if blank == -1 else blank)
        block = text[start:end]
        if not block or not any(c.isdigit() for c in block) or _PHONE_LINE.fullmatch(block):
            return None
        if "@" in block or "|" in block or len(block) > _SIGNATURE_MAX:
            return None
        return start, end


# -- dates of birth -------------------------------------------------------------------------------

_MONTH: Final = (
    r"(?:january|february|march|april|may|june|july|august|september|october|november|december"
    r"|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec"
    r"|januar|jänner|februar|märz|mai|juni|juli|oktober|dezember|okt|dez"
    r"|janvier|février|mars|avril|juin|juillet|août|septembre|octobre|novembre|décembre"
    r"|janv|févr|avr|juil|déc)\.?"
)
_DATE: Final = (
    r"(?:\d{1,2}[./-]\d{1,2}[./-](?:19|20)?\d\d(?!\d)"
    r"|(?:19|20)\d\d[./-]\d{1,2}[./-]\d{1,2}(?!\d)"
    rf"|\d{{1,2}}(?:st|nd|rd|th|er|\.)?[ \t]+(?:of[ \t]+)?{_MONTH}[ \t]*,?[ \t]*(?:19|20)\d\d(?!\d)"
    rf"|{_MONTH}[ \t]+\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+(?:19|20)\d\d(?!\d))"
)
_DOB_CUE: Final = (
    r"(?:born|dob|d\.o\.b\.?|date of birth|birth ?date|birthday|geboren|geb\.|geburtsdatum"
    r"|geburtstag|née?|né\(e\)|née?\(e\)|date de naissance|fecha de nacimiento|nacid[oa]"
    r"|data di nascita|nat[oa]|geboortedatum)"
)
_DOB_RE: Final = re.compile(
    rf"(?<![\w])(?i:{_DOB_CUE})(?![\w])[ \t]*[:=\-]?[ \t]*"
    r"(?:(?i:is|was|on|am|le|el|il|op|the|in|à|of)[ \t]+){0,2}"
    rf"(?P<date>(?i:{_DATE}))"
    # "Ich bin am 2. März 1966 geboren", "I was 12/03/1985 born" (rare in English)
    rf"|(?<![\w.])(?P<before>(?i:{_DATE}))[ \t]+(?i:geboren|born|né|née|né\(e\))(?!\w)"
)


_DOB_HINT: Final = re.compile(  # over lower case
    r"born|dob|d\.o\.b|birth|geb|né|naissance|nacid|nacimiento|nascita|nat[oa]\b|geboorte"
)


class DateOfBirthDetector:
    """Dates (numeric, or written with an English, German or French month) right after a
    date-of-birth cue: "born", "DOB:", "date of birth", "geboren am", "né le"."""

    name = "date_of_birth"
    field_classes: Final = frozenset({DATE_OF_BIRTH})

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        if _DOB_HINT.search(_lowered(text)) is None:
            return spans
        for match in _DOB_RE.finditer(text):
            group = "date" if match.group("date") is not None else "before"
            spans.append(Span(match.start(group), match.end(group), DATE_OF_BIRTH, self.name))
        return spans


# -- strict mode ----------------------------------------------------------------------------------

_CAPITALISED_RUN: Final = re.compile(rf"(?<![\w@.'\u2019-]){_NAME_CORE}(?![\w@'\u2019-]|\.\w)")


class CapitalisedNameDetector:
    """Strict mode: every run of capitalised words not made only of common words (see
    :data:`~vault.text._common_words.COMMON_WORDS`) is taken as a possible name. Finds names
    no cue announces, at the cost of redacting places, products and (in German) nouns."""

    name = "capitalised"
    field_classes: Final = frozenset({NAME})

    def find(self, text: str) -> list[Span]:
        spans: list[Span] = []
        for match in _CAPITALISED_RUN.finditer(text):
            words = match.group().split(" ")
            # drop common words at either end ("Thanks John" -> "John")
            first, last = 0, len(words)
            while first < last and words[first].lower() in COMMON_WORDS:
                first += 1
            while last > first and words[last - 1].lower() in COMMON_WORDS:
                last -= 1
            if first == last:
                continue
            start = match.start() + sum(len(w) + 1 for w in words[:first])
            end = start + len(" ".join(words[first:last]))
            spans.append(Span(start, end, NAME, self.name))
        return spans
