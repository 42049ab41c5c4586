"""The COCO caption evaluation's tokenizer, in pure Python.

`pycocoevalcap` tokenizes captions with Stanford CoreNLP 3.4.1's PTBTokenizer
(`-preserveLines -lowerCase`, a Java program), then drops the punctuation tokens in
`PUNCTUATIONS`. `ptb_tokenize` gives the same tokens without Java on caption text: lower case,
punctuation split off words, contractions split as the Penn Treebank does ("don't" -> "do n't",
"cannot" -> "can not", "gonna" -> "gon na"), brackets as -lrb- -rrb- -lsb- -rsb- -lcb- -rcb-,
double quotes as `` and '', numbers with their commas and decimal points kept whole, "$" and "%"
split from numbers, abbreviations ("u.s.", "mr.") keeping their period, "!!" and "?!" as one token.
Note the reference's own quirk: its list holds "-LRB-" in upper case while the tokenizer lower-
cases, so bracket tokens stay in the scored text; so they do here. `tests/fixtures/ptb_tokens.jsonl`
holds the Java tokenizer's output on a few hundred captions; the tests assert that ours agrees on
every one.
"""

from __future__ import annotations

import re

PUNCTUATIONS = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"}

ABBREVIATIONS = ("mr", "mrs", "ms", "dr", "prof", "st", "jr", "sr", "mt", "vs", "etc", "inc", "ltd", "co", "corp",
                 "jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec")
_BRACKETS = {"(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}
_SPLIT_WORDS = {"cannot": ("can", "not"), "gonna": ("gon", "na"), "gotta": ("got", "ta"), "wanna": ("wan", "na"),
                "lemme": ("lem", "me"), "gimme": ("gim", "me")}
_CLITICS = ("'s", "'re", "'ve", "'ll", "'d", "'m")
_CLITIC = re.compile(r"^(.+?)(n't|'s|'re|'ve|'ll|'d|'m)$")
_EMAIL = r"[a-z0-9._%+-]+@[a-z0-9.-]*[a-z0-9]"
_ABBREVIATION = r"(?:[a-z]\.){2,}|(?:" + "|".join(ABBREVIATIONS) + r")\."
# one raw token, first match wins
_TOKEN = re.compile("|".join([
    _EMAIL,                                   # someone@example.com
    r"[:;]-?[()]",                            # :) ;-(
    r"\d+(?:[,.:]\d+)+",                      # 5,000  3.5  3:30
    _ABBREVIATION + r"(?![a-z])",             # u.s.  mr.
    r"\.\.\.+", r"--+", r"[!?]+",
    r"[a-z0-9]+(?:['\-/&][a-z0-9]+)*'?",      # well-known  and/or  don't  players'
    r"'[a-z]+",                               # 's 'll, or an opening quote before a word
    r"\S",
]))
_KEEPS_PERIOD = re.compile(_ABBREVIATION + "|" + _EMAIL)


def _words(text: str) -> list[str]:
    out: list[str] = []
    for raw in _TOKEN.findall(text):
        if raw in _SPLIT_WORDS:
            out.extend(_SPLIT_WORDS[raw])
        elif len(raw) > 1 and raw[0] == "'" and raw not in _CLITICS:
            out.extend(["`", raw[1:]])  # an opening single quote
        elif len(raw) > 1 and raw[-1] == "'":
            out.extend([raw[:-1], "'"])  # players' -> players '
        elif (m := _CLITIC.match(raw)) is not None:
            out.extend(m.groups())  # man's -> man 's, don't -> do n't
        else:
            out.append(raw)
    return out


def ptb_tokenize(caption: str) -> list[str]:
    """One caption -> its tokens, as pycocoevalcap's PTBTokenizer + punctuation filter give them."""
    tokens: list[str] = []
    for tok in _words(caption.replace("\n", " ").lower()):
        if tok in _BRACKETS:
            tok = _BRACKETS[tok]
        elif tok[0] in ":;" and tok[-1] in "()":  # an emoticon keeps its bracket's name
            tok = tok[:-1] + _BRACKETS[tok[-1]]
        elif tok == '"':  # opening at the start or after an opening bracket/quote, else closing
            tok = "``" if not tokens or tokens[-1] in ("-lrb-", "-lsb-", "-lcb-", "``", "`") else "''"
        elif tok[-1] == "." and tok.strip(".") and not _KEEPS_PERIOD.fullmatch(tok):
            tokens.append(tok[:-1])
            tok = "."
        tokens.append(tok)
    return [t for t in tokens if t not in PUNCTUATIONS]


def tokenize_captions(captions: dict) -> dict:
    """{key: [caption, ...]} -> {key: [space-joined tokens, ...]}: what pycocoevalcap's scorers take."""
    return {k: [" ".join(ptb_tokenize(c)) for c in v] for k, v in captions.items()}
