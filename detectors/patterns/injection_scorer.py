"""Learned sentence scorer for injected tasks: hashed word and character n-grams plus a few cues of a task addressed
to an assistant (imperative mood, second person, requests for secrets), with logistic-regression weights trained by
benchmarks/train_injection_scorer.py on MIT-licensed data and shipped as injection_scorer.json."""

from __future__ import annotations

import json
import re
from collections import Counter
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

WEIGHTS = Path(__file__).with_name("injection_scorer.json")
N_FEATURES = 2**18
# A full stop or question mark followed by a lower-case word does not end a sentence: "What's Your Bid? was an
# ABC game show" is one sentence (a title that is a question), not a question and a fragment.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?![a-z])|(?<=[。！？])\s*|\n+|\|")
MAX_SENTENCE = 400
KEPT_WEIGHTS = 40_000


def sentences(text: str) -> list[tuple[int, str]]:
    """``(offset, sentence)`` pieces of ``text`` of three words or more: split at sentence ends, newlines and
    ``|`` field breaks; long pieces are cut into ``MAX_SENTENCE``-character windows."""
    out: list[tuple[int, str]] = []
    pos = 0
    for m in [*_SENTENCE_END.finditer(text), None]:
        end = m.start() if m else len(text)
        piece = text[pos:end]
        stripped = piece.strip()
        # Under three words ("Any questions?") there is too little to tell an injected task from a reply.
        if len(stripped) >= 8 and len(stripped.split()) >= 3:
            base = pos + piece.index(stripped[0])
            for k in range(0, len(stripped), MAX_SENTENCE):
                out.append((base + k, stripped[k : k + MAX_SENTENCE]))
        if m:
            pos = m.end()
    return out


def vectorizers() -> tuple[Any, Any]:
    """The two stateless feature hashers (word 1-2 grams, char_wb 3-5 grams); same for training and scoring."""
    from sklearn.feature_extraction.text import HashingVectorizer

    words = HashingVectorizer(n_features=N_FEATURES, ngram_range=(1, 2), alternate_sign=False, norm="l2",
                              token_pattern=r"(?u)\b\w+\b|[?!:\"']")
    chars = HashingVectorizer(n_features=N_FEATURES, analyzer="char_wb", ngram_range=(3, 5), alternate_sign=False,
                              norm="l2")
    return words, chars


# Hand-written cue lexicons (no POS tagger or word list is installed, and these few hundred words are the point):
# they generalise across attack families where n-grams only remember the topics of the training tasks.
IMPERATIVE_VERBS = frozenset("""
act add advertise advise analyse analyze answer append arrange ask assess assume avoid begin book brainstorm browse
build buy calculate call capture change check classify click collect compare compile complete compose compute
confirm consider contact continue convert copy correct count craft create critique debug decode decrypt define
delete demonstrate derive describe design detect determine develop disclose discuss disregard do donate download
draft draw edit elaborate email encode encrypt enter enumerate estimate evaluate execute explain explore express
extract fill find fix follow forget format forward gather generate give go guess guide help highlight identify
ignore illustrate imagine implement include inform insert install invent invite keep leak learn list locate log
look make mention monitor name narrate offer omit open optimize order organise organize outline output paraphrase
paste pay plan play post predict prepare present pretend print prioritise prioritize produce promote proofread
propose prove provide publish rank rate read recite recommend record redirect register reiterate remember remind
remove rename rephrase replace reply report repeat research respond restate reveal reverse review rewrite run save
say scan schedule search select sell send set share show sign simulate sing solve sort specify spell start state
stop store subscribe suggest summarise summarize switch tag teach tell transfer translate try tweet type update
upload urge use verify visit walk warn write
""".split())
_LEAD_IN = re.compile(
    r"^[\W_]*(?:(?:please|kindly|now|also|then|and|just|first|next|finally|additionally|lastly|always|never"
    r"|do not|don't|remember to|be sure to|make sure to|feel free to|try to),?\s+)*", re.I)
_CUES = tuple(re.compile(p, re.I) for p in (
    r"\b(?:you|your|yours|yourself)\b",
    r"\b(?:can|could|would|will|won't|do)\s+you\b|\b(?:tell|give|show|send|share with|remind)\s+me\b"
    r"|\bi\s+(?:want|need|would like)\s+you\b|\blet'?s\b",
    r"\bplease\b|\bkindly\b",
    r"\?[\"')\]]*\s*$",
    r"^[\W_]*(?:what|who|whom|whose|how|why|when|where|which|is|are|can|could|do|does|did|should|would|will)\b",
    r"\b(?:i|me|my)\b",
    r"\b(?:ai|assistant|chatbot|language model|gpt|llm|bot|model)\b",
    r"\b(?:response|answer|reply|respond|output|summary|summari[sz]e|instructions?|prompt)\b",
    r"\b(?:password|passcode|passphrase|secret|credentials?|pin|contraseña|clave|mot de passe|passwort|senha|"
    r"wachtwoord|parola d'ordine)\b|пароль|密码|口令|パスワード|비밀번호",
    r"https?://|www\.",
    r"https?://\S+\?\S*=",
    r"\b(?:encode|decode|base64|reverse|backwards|interlace|cipher|rot13|hex|spell)\w*\b",
    r"\b(?:imagine|pretend|suppose|assume|hypothetical(?:ly)?|role-?play|act as|let's say)\b",
    r"\b[a-z]+[0-9@$]+[a-z]+\b",
    # payload splitting: a task cut into named parts, strings or variables to be joined back
    r"\b(?:part|string|variable|segment|piece|fragment)\s*(?:\d+|[a-z])\s*(?:is|=|:)|\b[a-z]\d?\s*=\s*[\"']"
    r"|\b[a-z]\s*\+\s*[a-z]\b|\b(?:combine|concatenate|interlace|put together)\b",
    # a request or politeness marker in another language
    r"¿|\bpor favor\b|\bbitte\b|s'il vous pla[iî]t|\bpourriez\b|\bpouvez-vous\b|\bpodr[ií]as?\b|\bpuedes\b"
    r"|\bpuoi\b|\bpotresti\b|\bvoc[eê]\b|\bk[öo]nnen sie\b|\bkannst du\b|\bkunt u\b|\btolong\b"
    r"|пожалуйста|请|ください|주세요|십시오|कृपया|من فضلك|παρακαλώ",
    # the user (of the assistant) in several languages
    r"\bthe\s+user'?s?\b|\busuarios?\b|\butilisateur|\bbenutzer|\bnutzer|\butente\b|\busu[aá]rio|\bgebruiker"
    r"|\bpengguna\b|пользовател|用户|ユーザー|사용자|उपयोगकर्ता|المستخدم|χρήστη",
    # instruction verbs of other languages (write, tell, ignore, answer, translate, summarise)
    r"\b(?:escribe|escriba|redacta|responde|dime|ignora|ignore[zr]|écri(?:s|vez)|réponds|répondez|dites|schreib(?:e|en)?"
    r"|antworte|ignorier\w*|scrivi|rispondi|escreva|responda|diga|resuma|resume|traduce|traduis|übersetze)\b"
    r"|напиши|ответь|игнорир|写一|回答|忽略|無視|書いて|答えて|작성|무시|लिखें|अनदेखी|اكتب|تجاهل|αγνοήστε",
    # a question that is a quoted or glossed title ('"What Are You Doing?" is a song', "(English: What's Up?"):
    # it opens in brackets or quotes, or more words follow its closing quote
    r"^[\W_]*[(\[]|^\W*[\"“‘«]|\?[\"”’»)\]]+\s*[,;]?\s*(?:is|was|are|were|by|and|or|\(|[a-z])",
    # a question about a third person ("Can the power of his heart overpower his past?"): narrative, not a task
    r"^(?!.*\b(?:you|your|me|my|i)\b).*\b(?:he|him|his|she|her|they|them|their)\b.*\?",
    # an obligation laid on the reader's work ("your reply must", "your script should also")
    r"\byour\s+(?:[\w-]+\s+){0,2}(?:should|must|needs?\s+to|has\s+to|ought\s+to|shall)\b",
))
N_CUES = len(_CUES) + 7
#: Words that start declarative sentences and questions (articles, pronouns, prepositions, conjunctions, ...):
#: never the verb of an imperative.
_NOT_VERBS = frozenset("""
a an the this that these those it its he she they we i you your my our their his her there here what which who
whom whose when where why how if in on at by for from of to with as and or but so yet not no yes all any each every
some many most much more one two three after before during since until while because although though also just
only thanks thank hi hello dear regards best note however therefore thus then now today yesterday please among
despite like under over inside outside within without about above below between through across around against
along near beyond upon onto into toward towards via per nevertheless neither nor either whether meanwhile moreover
furthermore instead hence still even ever never always often once later earlier several few other another such
same four five six seven eight nine ten subject
""".split())
_OBJECT_START = re.compile(
    r"^(?:your|the|a|an|this|these|that|those|me|us|them|it|all|every|each|some|up|out|my|our|any|both)\b", re.I)
_NOT_BASE_FORM = re.compile(r"(?:ed|ing|ly|[^s]s)$")


def imperative(text: str) -> bool:
    """Whether ``text`` (after "please", "now", ...) opens with an imperative: a listed verb, or a base-form word
    (no -s/-ed/-ing/-ly ending, not a function word) followed by its object ("Modify your answer", "Jumble up the
    letters"), so verbs missing from the list still count."""
    rest = text[_LEAD_IN.match(text).end():]  # type: ignore[union-attr]
    words = rest.split(maxsplit=2)
    first = words[0].lower().strip(",.:;!?\"'") if words else ""
    if first in IMPERATIVE_VERBS:
        return True
    return (len(words) > 1 and first.isalpha() and first not in _NOT_VERBS and not _NOT_BASE_FORM.search(first)
            and _OBJECT_START.match(words[1]) is not None)
_WORD = re.compile(r"[^\W\d_]{4,}")


def cue_features(texts: list[str]) -> Any:
    """Dense cues per text: the text opens with an imperative (:func:`imperative`); each of ``_CUES``;
    a bucket of the word count (short standalone tasks differ from prose); the share of capitalised words and
    whether all are (a title that is a question, "What Is To Be Done?", is not a task)."""
    from scipy.sparse import csr_matrix

    rows = np.zeros((len(texts), N_CUES), dtype=np.float64)
    for i, text in enumerate(texts):
        rows[i, 0] = imperative(text)
        for j, cue in enumerate(_CUES, start=1):
            rows[i, j] = cue.search(text) is not None
        words = len(text.split())
        rows[i, len(_CUES) + 1 + min(3, (words > 6) + (words > 15) + (words > 30))] = 1.0
        long_words = _WORD.findall(text)
        if long_words:
            capitalised = sum(w[0].isupper() for w in long_words) / len(long_words)
            rows[i, len(_CUES) + 5] = capitalised
            rows[i, len(_CUES) + 6] = capitalised == 1.0 and len(long_words) >= 2
    return csr_matrix(rows)


_CONTENT_WORD = re.compile(r"[^\W\d_]{4,}")
_STOP = frozenset("""
about above after again also been before being below between both could does doing down during each from further
have having here into just more most once only other over same should some such than that their them then there
these they this those through under until very what when where which while with would your yours you're will
""".split())
N_CONTEXT = 10
N_SHAPE = 2**16
#: Words a sentence's shape keeps; every other word becomes ``w`` (digits ``0``), so "Summarize the main findings
#: of the 2020 climate report." and "Describe the key themes of the 1984 novel." share the shape n-grams that the
#: topic-laden word n-grams cannot see.
SHAPE_WORDS = IMPERATIVE_VERBS | _STOP | frozenset("""
a an the of to in on for by at as and or but if so not no yes is are was were be am do did has had can may might
must shall i me my we us our you he him his she her it its they them their all any each every some one following
new now also just only please instead first then next end start user users assistant ai model bot chatbot system
prompt prompts instruction instructions rule rules response responses answer answers reply message messages text
sentence question password secret key code data information content email link url file command script
""".split())
_SHAPE_TOKEN = re.compile(r"\w+|[^\w\s]")


def shape(text: str) -> str:
    """``text`` with every word outside ``SHAPE_WORDS`` replaced by ``w`` (numbers by ``0``)."""
    return " ".join(t if t in SHAPE_WORDS or not t[0].isalnum() else "0" if t.isdigit() else "w"
                    for t in _SHAPE_TOKEN.findall(text.lower()))


def content_words(text: str) -> set[str]:
    return {w for w in (m.lower() for m in _CONTENT_WORD.findall(text)) if w not in _STOP}


def context_overlap(pieces: list[str]) -> npt.NDArray[np.float64]:
    """Per sentence of one document, the share of its content words found in the document's other sentences
    (NaN for a lone sentence). An injected task is off-topic for its host ("What is the capital of Brazil?" in a
    booking email), while a clean question is usually answered or echoed around it (a passage titled "What Is a
    Nation?" goes on about nations) — a cue that does not depend on the attack's wording."""
    if len(pieces) < 2:
        return np.full(len(pieces), np.nan)
    words = [content_words(p) for p in pieces]
    counts: Counter[str] = Counter(w for ws in words for w in ws)
    return np.array([sum(counts[w] > 1 for w in ws) / len(ws) if ws else 1.0 for ws in words])


#: Letters of each script (a sentence in another script than its document is out of place there: a Japanese
#: question in an English email). Ranges, not a language-ID model: none is installed and scripts are what matters.
_SCRIPTS = tuple((name, re.compile(ranges)) for name, ranges in (
    ("latin", "[A-Za-z\u00c0-\u024f]"), ("cyrillic", "[\u0400-\u04ff]"), ("greek", "[\u0370-\u03ff]"),
    ("arabic", "[\u0600-\u06ff]"), ("hebrew", "[\u0590-\u05ff]"), ("devanagari", "[\u0900-\u097f]"),
    ("thai", "[\u0e00-\u0e7f]"), ("hangul", "[\uac00-\ud7af\u1100-\u11ff]"),
    ("cjk", "[\u3040-\u30ff\u4e00-\u9fff]"),
))
#: The most frequent function words of some Latin-script languages; a sentence's language is the one with the
#: most of them (two more than any other), which tells a French question in an English email from English prose
#: without a language-ID model.
_FUNCTION_WORDS = {lang: frozenset(words.split()) for lang, words in {
    "en": "the and is are of to with that this what how you for was were it be which who from have has in on",
    "es": "el la los las que es de del en un por para con una cuál cómo qué está son se su al lo puedes dónde",
    "fr": "le la les des est et une un de du pour dans avec qui quel quelle comment vous au sur sont ce pas où en",
    "de": "der die das und ist nicht mit ein eine wie was wer wo sie ich auf für den dem sind zu von im",
    "it": "il la le gli è di che per una un con del della qual come sono non nel alla dove chi",
    "pt": "os é da de que para com uma um não você qual como onde quem são na em",
    "nl": "de het een en is van dat niet met voor wat hoe zijn wie waar",
    "id": "yang dan di ini itu dengan untuk apa bagaimana cara tidak adalah",
}.items()}
# One-letter words ("a", "e", "o", "y") and "as", "do", "no" belong to several languages and are left out.
_LATIN_WORD = re.compile(r"[^\W\d_]{2,}|[èé]")


def script_of(text: str) -> str | None:
    """The script most of the letters of ``text`` are in (None under four letters)."""
    if text.isascii():
        return "latin" if sum(c.isalpha() for c in text) >= 4 else None
    counts = [(len(regex.findall(text)), name) for name, regex in _SCRIPTS]
    best = max(counts)
    return best[1] if best[0] >= 4 else None


def language_of(text: str) -> str | None:
    """The Latin-script language whose function words ``text`` uses most (None when unclear)."""
    words = [w.lower() for w in _LATIN_WORD.findall(text)]
    counts = sorted(((sum(w in fw for w in words), lang) for lang, fw in _FUNCTION_WORDS.items()), reverse=True)
    return counts[0][1] if counts[0][0] >= 2 and counts[0][0] >= counts[1][0] + 2 else None


_GLOSS = re.compile(r"^[(\[]\s*(?:[^\W\d_]+\s+){0,2}[^\W\d_]+\s*:")


def _task_shaped(text: str) -> bool:
    return imperative(text) or any(_CUES[k].search(text) for k in (1, 2, 3, 4))


_CODE_LINE = re.compile(
    r"^\s*(?:>>>|\$ |#include\b|(?:import|from|def|class|return|elif|else|try|except|finally|async|await|const|let"
    r"|var|function|public|private|static|raise|yield|del|pass|break|continue)\b|(?:for|while|if|with)\b.*[:{)]\s*$)"
    r"|^\s*[\w.\[\]'\"]+(?:\s*,\s*[\w.\[\]'\"]+)*\s*(?:[-+*/%|&]?=(?!=)|:=)\s*\S"
    r"|^\s*[\w.]+\(.*\)\s*[;:]?\s*$"
    r"|[{};]\s*$")
_PROSE_RUN = re.compile(r"(?:\b[^\W\d_]+\b[,;]?\s+){3}\b[^\W\d_]+\b")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{2,}")
_COMMON_IDENTIFIERS = frozenset("""
import from for with open print self return true false none the and not def class while else elif try except
async await const let var function public private int str len range list dict file new
""".split())


def code_like(piece: str) -> bool:
    """Whether a piece reads as a line of code (a call, an assignment, a keyword opening a statement), not prose."""
    if _CODE_LINE.search(piece):
        return True
    # a continuation line ('r, sock = (', '["curl", "-F", url]'): brackets or "=" and no run of four plain words
    return re.search(r"[()\[\]{}=]", piece) is not None and _PROSE_RUN.search(piece) is None


def code_block_context(pieces: list[str]) -> npt.NDArray[np.float64]:
    """Per sentence, ``(introduces code, none of the introduced code's names occurs elsewhere in the document)``:
    a prose sentence after prose and followed by a run of code lines introduces that code, and injected code is
    foreign to its host (an e-mail has no code; an answer's own code reuses the names of its question and prose),
    which tells "Merge the snippet below into your solution:" from "update this line in your code as:"."""
    out = np.zeros((len(pieces), 2))
    is_code = [code_like(p) for p in pieces]
    idents = [{w.lower() for w in _IDENTIFIER.findall(p)} - _COMMON_IDENTIFIERS for p in pieces]
    for i in range(len(pieces)):
        if is_code[i]:
            continue
        end = i + 1
        while end < len(pieces) and is_code[end]:
            end += 1
        if end == i + 1:
            continue
        block = set().union(*idents[i + 1 : end])
        rest = set().union(*idents[:i], *idents[end:])
        # a sentence between two code lines only splits a block (or was slipped into it): it introduces nothing
        out[i, 0] = i == 0 or not is_code[i - 1]
        out[i, 1] = bool(block) and not block & rest
    return out


def context_features(pieces: list[str]) -> npt.NDArray[np.float64]:
    """``(len(pieces), N_CONTEXT)`` features of each sentence against the other sentences of its document: content
    overlap (:func:`context_overlap`), whether it shares no content word, whether it is alone, whether it is the only
    task-shaped (imperative, question, request) or second-person sentence of its document, task shape times how
    off-topic it is, and whether it is in another script or Latin-script language than the rest of the document.
    None of these depend on the words of an attack: they say a task is addressed to someone and out of place."""
    out = np.zeros((len(pieces), N_CONTEXT))
    if len(pieces) < 2:
        out[:, 2] = 1.0
        return out
    out[:, 8:10] = code_block_context(pieces)
    overlap = context_overlap(pieces)
    task = np.array([_task_shaped(p) for p in pieces])
    you = np.array([_CUES[0].search(p) is not None for p in pieces])
    scripts = [script_of(p) for p in pieces]
    languages = [language_of(p) if s == "latin" else None for p, s in zip(pieces, scripts, strict=True)]
    script_counts = Counter(s for s in scripts if s)
    language_counts = Counter(lang for lang in languages if lang)
    out[:, 0] = overlap
    out[:, 1] = overlap == 0.0
    out[:, 3] = task & (task.sum() == 1)
    out[:, 4] = task * (1.0 - overlap)
    out[:, 5] = you & (you.sum() == 1)
    for i, (script, language) in enumerate(zip(scripts, languages, strict=True)):
        if _GLOSS.match(pieces[i]):  # "(Russian: Что такое СССР?": a name glossed in its own language
            continue
        # against the script/language of most other sentences, when at least two of them agree on one
        other_script = (script_counts - Counter([script] if script else [])).most_common(1)
        out[i, 6] = bool(script and other_script and other_script[0][1] >= 2 and other_script[0][0] != script)
        other_language = (language_counts - Counter([language] if language else [])).most_common(1)
        out[i, 7] = bool(language and other_language and other_language[0][1] >= 2
                         and other_language[0][0] != language)
    return out


#: Weight of the context and cue columns against the n-gram ones: L2 regularisation shrinks a column scaled by s
#: s² times less, so the features that describe any attack, not the topics of the training ones, keep their say.
GENERIC_SCALE = 1.0


def featurize(texts: list[str], context: npt.NDArray[np.float64] | None = None) -> Any:
    """Sparse ``(n, N_COLUMNS)`` features of ``texts``: word n-grams, character n-grams, n-grams of the
    :func:`shape`, :func:`context_features` (``context``, one row per text; None when there is no document), cues."""
    from scipy.sparse import csr_matrix, hstack
    from sklearn.feature_extraction.text import HashingVectorizer

    words, chars = vectorizers()
    shapes = HashingVectorizer(n_features=N_SHAPE, ngram_range=(1, 3), alternate_sign=False, norm="l2",
                               lowercase=False, token_pattern=r"\S+")
    if context is None:
        context = np.zeros((len(texts), N_CONTEXT))
        context[:, 2] = 1.0
    return hstack([words.transform(texts), chars.transform(texts), shapes.transform([shape(t) for t in texts]),
                   csr_matrix(context * GENERIC_SCALE), cue_features(texts) * GENERIC_SCALE]).tocsr()


def featurize_documents(docs: list[list[str]]) -> Any:
    """Features of every sentence of every document (each a list of its sentences), in order."""
    flat = [s for d in docs for s in d]
    context = np.concatenate([context_features(d) for d in docs]) if flat else np.zeros((0, N_CONTEXT))
    return featurize(flat, context)


N_COLUMNS = 2 * N_FEATURES + N_SHAPE + N_CONTEXT + N_CUES


class SentenceScorer:
    """Probability that a sentence is an injected instruction (higher = more suspicious)."""

    def __init__(self, coef: npt.NDArray[np.float64], intercept: float, meta: dict[str, Any]) -> None:
        self.coef = coef
        self.intercept = intercept
        self.meta = meta

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> SentenceScorer:
        data = json.loads(path.read_text(encoding="utf-8"))
        coef = np.zeros(N_COLUMNS, dtype=np.float64)
        coef[np.asarray(data["index"], dtype=np.int64)] = np.asarray(data["coef"], dtype=np.float64)
        return cls(coef, float(data["intercept"]), data.get("meta", {}))

    def pruned(self, top: int = KEPT_WEIGHTS) -> SentenceScorer:
        """The same scorer with only its ``top`` largest weights, rounded as saved (what ships is what is measured)."""
        keep = np.argsort(-np.abs(self.coef))[:top]
        coef = np.zeros_like(self.coef)
        coef[keep] = np.round(self.coef[keep], 4)
        return SentenceScorer(coef, round(self.intercept, 5), dict(self.meta))

    def save(self, path: Path) -> None:
        keep = np.flatnonzero(self.coef)
        path.write_text(json.dumps({
            "intercept": round(self.intercept, 5), "meta": self.meta,
            "index": keep.tolist(), "coef": [round(float(c), 4) for c in self.coef[keep]],
        }, separators=(",", ":")), encoding="utf-8")

    def score_features(self, features: Any) -> npt.NDArray[np.float64]:
        """Probabilities of rows already passed through :func:`featurize`."""
        logits = features @ self.coef + self.intercept
        return np.asarray(1.0 / (1.0 + np.exp(-logits)), dtype=np.float64)

    def score(self, texts: list[str]) -> npt.NDArray[np.float64]:
        """Probabilities of standalone sentences (no document around them)."""
        return self.score_features(featurize(texts)) if texts else np.zeros(0)

    def score_documents(self, docs: list[list[str]]) -> npt.NDArray[np.float64]:
        """Probabilities of every sentence of every document, in order (see :func:`featurize_documents`)."""
        return self.score_features(featurize_documents(docs)) if any(docs) else np.zeros(0)


@lru_cache(maxsize=1)
def default_scorer() -> SentenceScorer | None:
    """The shipped scorer, or None when its weights file is absent (the rules still run)."""
    return SentenceScorer.load() if WEIGHTS.exists() else None
