"""A site's alphabet: the characters a reader answers a site's captchas with.

Sites draw their captchas from alphabets built of whole families: digits, upper-case letters,
lower-case letters.  A wide reader (the general one reads 0-9A-Za-z) confuses characters across
families (O and 0, l and 1, c and C) that a site never mixes.  Once a site's corrections show
which families it uses, its captchas are read with those families only: the labels' characters
plus every character of each family they use (a few corrections rarely show all of one), in
the reader's charset.  bench/results/site_alphabet.md has what that gains: from 3-5 corrections,
the general reader's mean over four held-out schemes rises from 74.9 % to 76.7 % ignoring case,
and from 59.1 % to 72.5 % exactly (answers come in the site's case).

Mirrored in extension/lib/engine.js (siteCharset); tests/contract_cases.json holds both to it.
"""
from __future__ import annotations

DIGITS = "0123456789"
UPPER = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
LOWER = "abcdefghijklmnopqrstuvwxyz"
FAMILIES = (("digit", DIGITS), ("upper-case letter", UPPER), ("lower-case letter", LOWER))

# Fewer corrections than this say too little: one label of 5 characters drawn from digits and
# lower case shows no digit one time in five (bench: casual-colour read at 28 % instead of 43 %).
MIN_LABELS = 3


def widen(seen: str, charset: str) -> str:
    """The characters `seen` plus, for each family they use, every character of that family in
    `charset`, in charset's order (other seen characters after)."""
    used = [chars for _, chars in FAMILIES if set(seen) & set(chars)]
    keep = set(seen).union(*map(set, used)) if used else set(seen)
    ordered = [c for c in charset if c in keep]
    return "".join(ordered + sorted(keep - set(ordered)))


def read_with(charset: str, alphabet: str) -> str:
    """The characters of a reader's `charset` to read a site with whose captchas showed the
    characters `alphabet`: widen(alphabet) within charset, or all of charset when alphabet
    holds none of its characters (or is empty)."""
    return "".join(c for c in widen(alphabet, charset) if c in charset) or charset


def site_charset(charset: str, seen: str, labels: int) -> str:
    """read_with after `labels` corrections whose characters are `seen`: all of charset until
    MIN_LABELS corrections."""
    return charset if labels < MIN_LABELS else read_with(charset, seen)


def covers(charset: str, alphabet: str) -> bool:
    """Does a reader of `charset` read every character of the families `alphabet` shows?  The
    automatic reader skips its first model for a site when not: it can never be right there
    (the default model, 0-9a-z, on a site of capitals)."""
    return set(widen(alphabet, charset)) <= set(charset)


MAX_ALPHABET = 256  # characters a host request may name
