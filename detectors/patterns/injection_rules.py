"""Pattern data for indirect prompt injection: override phrases in several languages, fake role markers, tool-call
syntax, exfiltration links, hidden-text carriers, and phrases that address the assistant instead of the reader."""

from __future__ import annotations

import re
import unicodedata

_I = re.IGNORECASE

#: Instruction-override phrasing, English and other languages (es, fr, de, it, pt, nl, ru, zh, ja, hi).
OVERRIDE = re.compile(
    r"\b(?:ignore|disregard|forget|skip|override|bypass|neglect|drop)\b[^.\n]{0,40}?"
    r"\b(?:previous|prior|above|earlier|preceding|original|initial|all|any|your|the|those|system)\b[^.\n]{0,30}?"
    r"\b(?:instructions?|directives?|prompts?|rules|guidelines|commands?|context|restrictions|constraints|orders)\b"
    r"|\b(?:new|updated|revised|real|actual|additional)\s+(?:system\s+)?(?:instructions?|directives?|task)\s*:"
    r"|\byou\s+are\s+now\s+(?:in\s+)?(?:an?\s+|the\s+)?(?:\w+\s+)?(?:mode|assistant|ai|bot|model|dan|jailbroken|"
    r"unrestricted|unfiltered)\b"
    r"|\b(?:developer|god|debug|admin|system|jailbreak|dan|unrestricted)\s+mode\s+(?:activated|enabled|on)\b"
    # the bare "Ignore the above and say ..." of PromptInject (Perez & Ribeiro, 2022), where no noun follows
    r"|\b(?:ignore|disregard)\s+(?:all\s+(?:of\s+)?)?(?:the\s+|everything\s+)?(?:above|preceding)\b"
    r"(?!\s+(?:\w+\s+)?(?:figures?|tables?|charts?|equations?|sections?|examples?|paragraphs?|steps?|lists?)\b)"
    r"|\b(?:reveal|print|show|output|repeat|leak|disclose)\s+(?:me\s+)?(?:your|the)\s+(?:full\s+|entire\s+|hidden\s+|"
    r"original\s+|initial\s+)?(?:system\s+prompt|instructions|prompt|secret\s+key|password)\b"
    r"|\bignora(?:r)?\s+(?:todas\s+)?(?:las\s+|le\s+|tutte\s+le\s+)?(?:instrucciones|istruzioni|indicaciones)"
    r"|\bignore[rz]?\s+(?:toutes\s+)?(?:les\s+)?(?:instructions|consignes)\s+(?:pr[ée]c[ée]dentes|ant[ée]rieures)"
    r"|\bignorier(?:e|en)?\s+(?:sie\s+)?(?:alle\s+)?(?:vorherigen|bisherigen|obigen|vorigen)\s+(?:anweisungen|befehle)"
    r"|\bignore\s+(?:todas\s+)?as\s+instru[çc][õo]es\s+anteriores"
    r"|\bnegeer\s+(?:alle\s+)?(?:vorige|eerdere)\s+instructies"
    r"|игнорируй(?:те)?\s+(?:все\s+)?(?:предыдущие|прежние)\s+инструкции"
    r"|忽略(?:之前|以上|先前|前面|所有)(?:的)?(?:所有)?(?:指令|指示|说明)"
    r"|(?:以前|前)の指示を(?:無視|忘れ)"
    r"|पिछले\s+निर्देशों\s+(?:की\s+अनदेखी|को\s+अनदेखा)"
    r"|αγνο(?:ήστε|ησε|ήσε)\s+(?:όλες\s+)?τις\s+(?:προηγούμενες|παραπάνω)\s+οδηγίες",
    _I,
)

#: Chat-template and role markers that have no business inside a document.
ROLE_MARKER = re.compile(
    r"<\|(?:im_start|im_end|system|user|assistant|endoftext|eot_id|start_header_id|end_header_id)\|>"
    r"|\[/?INST\]|<</?SYS>>|<\s*/?\s*(?:system|sys)\s*>|\[/?SYSTEM\]|<SYSTEM MODE>"
    r"|(?:^|\n)\s*#{2,}\s*(?:system|instruction|new instructions?)\s*:?\s*(?:\n|$)"
    r"|(?:^|\n)\s*(?:system|assistant)\s*(?:prompt|message)?\s*:\s*(?:you|ignore|from now|your)",
    _I,
)

#: Tool / function-call syntax aimed at an agent.
TOOL_CALL = re.compile(
    r"<\s*/?\s*(?:tool_call|function_call|function_calls|invoke|tool_use|antml:[a-z_]+)\b"
    r"|\"(?:function_call|tool_calls?)\"\s*:"
    r"|\{\s*\"name\"\s*:\s*\"[\w.\-]+\"\s*,\s*\"(?:arguments|parameters|args)\"\s*:"
    r"|(?:^|\n)\s*Action\s*:\s*\w+\s*\n\s*Action Input\s*:"
    r"|\bfunctions\.[a-z_]\w*\s*\(",
    _I,
)

#: Markdown image (auto-fetched by renderers) with a query string, or a link carrying template placeholders.
EXFIL_LINK = re.compile(
    r"!\[[^\]]{0,200}\]\(\s*https?://[^)\s]+\?[^)\s]*=[^)\s]*\)"
    r"|\]\(\s*https?://[^)\s]+\?[^)\s]*(?:\{|\[|%7B|%5B|<)[^)\s]*\)"
    r"|<img\b[^>]*\bsrc\s*=\s*[\"']?https?://[^\"'>\s]+\?[^\"'>\s]*=",
    _I,
)

# U+2061-2064 (invisible math operators) are left out: Wikipedia's math markup uses them legitimately.
ZERO_WIDTH = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u180e]")
ZERO_WIDTH_IN_WORD = re.compile("(?<=[A-Za-z])[\u200b\u200c\u200d\u2060\ufeff\u180e]+(?=[A-Za-z])")
ZERO_WIDTH_RUN = re.compile("[\u200b\u200c\u200d\u2060\ufeff\u180e]{8,}")
TAG_CHARS = re.compile("[\U000e0000-\U000e007f]+")
BIDI = re.compile("[\u202a-\u202e\u2066-\u2069]")
#: Bidi openers and the strong direction their text is shown in (FSI takes the direction of its own text).
_BIDI_OPENERS = {"\u202a": "L", "\u202d": "L", "\u2066": "L", "\u202b": "R", "\u202e": "R", "\u2067": "R",
                 "\u2068": None}
_BIDI_OVERRIDES = frozenset("\u202d\u202e")


def reordering_bidi(text: str) -> re.Match[str] | None:
    """The first bidi control that changes how text is shown, None when every one only restates a direction.

    Hidden-text attacks (Trojan Source, reversed instructions) use a control to make the displayed order differ
    from the order a model reads: an override or embedding around text of the other direction, around digits (an
    override reverses them) or around text that mixes directions. Web pages wrap right-to-left names in an RTL
    embedding (``RLE עברית PDF`` in a language menu): text of one direction inside a control of that direction is
    shown exactly as it is stored. A control's text runs to the next bidi control or line end; a stray closer
    (PDF, PDI) changes nothing; a nested opener is judged suspicious (natural markup does not nest them)."""
    for m in BIDI.finditer(text):
        char = m.group()
        if char not in _BIDI_OPENERS:
            continue
        nxt = BIDI.search(text, m.end())
        line_end = text.find("\n", m.end())
        end = min(nxt.start() if nxt else len(text), line_end if line_end >= 0 else len(text))
        if nxt is not None and nxt.start() == end and nxt.group() in _BIDI_OPENERS:
            return m
        classes = {unicodedata.bidirectional(c) for c in text[m.end():end]}
        strong = {"L" if k == "L" else "R" for k in classes if k in ("L", "R", "AL")}
        want = _BIDI_OPENERS[char]
        if len(strong) > 1 or (want is not None and strong - {want}):
            return m
        if char in _BIDI_OVERRIDES and classes & {"EN", "AN"}:
            return m
    return None
HTML_COMMENT = re.compile(r"<!--(.*?)-->", re.S)
CSS_HIDDEN = re.compile(
    r"<(\w+)[^>]*\bstyle\s*=\s*[\"'][^\"']*(?:display\s*:\s*none|visibility\s*:\s*hidden|font-size\s*:\s*0(?:px|pt|em)?"
    r"\s*[;\"']|opacity\s*:\s*0(?:\.0+)?\s*[;\"']|color\s*:\s*(?:white|#fff(?:fff)?|transparent)\b)[^\"']*[\"'][^>]*>"
    r"(.*?)</\1>",
    _I | re.S,
)
BASE64_BLOB = re.compile(r"(?<![A-Za-z0-9+/=])[A-Za-z0-9+/]{24,}={0,2}(?![A-Za-z0-9+/=])")
HEX_BLOB = re.compile(r"(?<![0-9A-Fa-f])(?:[0-9A-Fa-f]{2}){16,}(?![0-9A-Fa-f])")

#: Plain-language tasks addressed to an assistant rather than to the document's reader.
ADDRESSED_TASK = re.compile(
    r"\b(?:in|to|at the (?:end|start|beginning|top|bottom) of)\s+your\s+(?:response|answer|reply|summary|output|"
    r"next message|final answer)\b"
    r"|\b(?:when|while|before|after)\s+(?:you\s+)?(?:are\s+)?(?:summari[sz]|answer|respond|repl)\w*\s+"
    r"(?:this|the|about|to)\b[^.\n]{0,60}?\b(?:make sure|be sure|please|you must|you should|"
    r"remember to|do not|don't|include|add|append|mention|tell)\b"
    r"|\b(?:tell|inform|remind|instruct|ask|urge|advise|warn)\s+the\s+user\s+(?:to|that)\b"
    r"|\b(?:append|prepend|add|include|insert|attach)\b[^.\n]{0,60}?\b(?:to|in|into|at the end of)\s+(?:your|the|every|"
    r"each)\s+(?:response|answer|reply|summary|output|message)s?\b"
    r"|\b(?:ai|assistant|language model|chatbot|llm|copilot|agent|gpt|claude|gemini)s?\b[,:]?\s+(?:please\s+)?"
    r"(?:you\s+)?(?:must|should|need to|are (?:required|instructed) to|will now)\b"
    r"|\bdo\s+not\s+(?:tell|mention|reveal|inform|disclose|let)\s+(?:this\s+to\s+)?(?:the\s+user|anyone|them)\b"
    r"|\b(?:respond|reply|answer)\s+(?:only\s+)?(?:with|in)\s+(?:\"|'|the\s+word|exactly|only|reverse|spanish|french|"
    r"german|chinese|emoji|all caps|uppercase|base64)"
    r"|\b(?:your|the)\s+(?:response|answer|reply|output)\s+(?:must|should)\b"
    r"|\b(?:translate|render|rewrite|convert)\s+(?:your|the)\s+(?:response|answer|reply|output)\b"
    # an edit of the assistant's own output ("Modify your answer to ...", "Reverse your answer's character order")
    r"|\b(?:modify|change|alter|reverse|format|shorten|lengthen|begin|start|end|finish|conclude|sign|adjust|"
    r"tweak|edit|revise|structure|phrase|style)\s+your\s+(?:answer|response|reply|output)(?:'s)?\b"
    # a credential asked of whoever reads the text
    r"|\b(?:what(?:'s|\s+is|\s+was)|tell\s+me|give\s+me|send\s+me|share\s+with\s+me)\s+(?:the|your|their|his|her)"
    r"\s+(?:current\s+|secret\s+|admin\s+)?(?:password|passcode|passphrase|secret key|api key|access code)\b"
    r"|\bwas\s+ist\s+(?:das|dein|ihr|euer)\s+passwort\b|\bqual\s+(?:é|e)\s+a\s+(?:sua\s+|tua\s+)?senha\b"
    r"|\bcu[aá]l\s+es\s+(?:la|tu|su)\s+contrase[ñn]a\b|\bquel\s+est\s+(?:le|ton|votre)\s+mot\s+de\s+passe\b"
    r"|\bqual\s+(?:è|e)\s+la\s+(?:tua\s+|sua\s+)?password\b|\bwat\s+is\s+(?:het|je|jouw|uw)\s+wachtwoord\b"
    # a named person's private details asked of whoever reads the text
    r"|\b(?:could|can|would|will)\s+you\s+(?:please\s+)?(?:tell|give|share|provide|send|find)\s+(?:me\s+|us\s+)?"
    r"(?:with\s+)?(?-i:[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)'s\s+(?:current\s+|home\s+|full\s+|exact\s+)?(?:birth\s*date|"
    r"date\s+of\s+birth|birthday|address|home\s+address|phone\s+number|email\s+address|social\s+security\s+number|"
    r"city\s+of\s+residence|location|salary|password)\b"
    r"|\bwhere\s+does\s+(?-i:[A-Z][a-z]+(?:\s+[A-Z][a-z]+)?)\s+(?:currently\s+)?live\?",
    _I,
)

#: A weaker form of a task addressed to an assistant (VA517 at LOW): a code block handed over to go into "your
#: code / implementation / solution". A programming answer may say so to a person, so it is listed for review, not
#: alerted (none of ~22,000 clean development documents, 100 of them programming answers, says it).
ADDRESSED_WEAK = re.compile(
    r"\b(?:following|subsequent|below|above|given)\s+code\s+(?:block|snippet|excerpt|section|fragment|segment)s?\b"
    r"[^.\n]{0,80}?\byour\s+(?:\w+\s+)?(?:code\s*base|codebase|code|implementation|solution|algorithm|program|"
    r"elucidation|project|script)\b"
    r"|\byour\s+(?:\w+\s+)?(?:code\s*base|codebase|code|implementation|solution|algorithm|program|project|script)\b"
    r"[^.\n]{0,80}?\b(?:following|subsequent|below|given)\s+code\s+(?:block|snippet|excerpt|section|fragment|"
    r"segment)s?\b",
    _I,
)

#: Instruction words that make decoded or hidden content an injection (checked on decoded payloads).
INSTRUCTION_WORDS = re.compile(
    r"\b(?:ignore|disregard|instructions?|system prompt|you are|you must|respond|reply|assistant|password|secret|"
    r"send|visit|click|execute|run|download|forget|pretend|act as|do not|must)\b",
    _I,
)
