"""Redaction before persistence.

Four layers, in order: the seed's rule (a step that fires a secret-bearing tool keeps
no narration, since the narration may echo the secret it is about to send); masking of
well-known secret formats in every persisted string, and of values under secret-looking
keys, both in tool arguments and as ``key=value`` / ``key: value`` pairs in free text
(run input and output, tool results and step extras are free text, and secrets reach
them as query strings, form bodies, headers, config dumps); masking of personal data
(e-mail addresses, payment cards, phone numbers, IBANs), opt-in because it is a guess
and a wrong guess hides what the log is for; then the user's own ``mask`` callable, last.

Every string of every event passes here on the agent's thread, so each pattern first
asks a cheap question (is one of its literal fragments in the text? a separator? an
"@"? seven digits close together?) and its regex runs only when the answer is yes:
ordinary prose pays a handful of substring tests. Each regex starts with a literal or
a character class, so the engine skips to candidates instead of trying every position.
Masking is idempotent (no pattern matches a ``[REDACTED:kind]`` mask) and never raises.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from typing import Any

__all__ = [
    "DEFAULT_PERSONAL_DATA_PATTERNS",
    "DEFAULT_SECRET_KEYS",
    "DEFAULT_SECRET_PATTERNS",
    "RedactionPolicy",
]


def _token(prefix: str, rest: str) -> str:
    """A token that starts with the literal ``prefix``: not glued to a word character
    before it, except a percent-escape ("key%3Dsk-..." is "key=sk-..." URL-encoded). The
    check comes after the literal so that the regex engine can jump from one occurrence
    of the literal to the next (a pattern that starts with an assertion is tried at every
    position: 50 times slower)."""
    p = re.escape(prefix)
    return p + r"(?:(?<!\w" + p + r")|(?<=%[0-9A-Fa-f]{2}" + p + r"))" + rest


# An AWS secret access key is 40 base64 characters; without a label naming it, that is
# also what hashes and ids look like, so only labelled values count: the label and its
# separator stay, the value goes.
_AWS_SECRET_VALUE = (
    r"""(?:\\?["'])?[ \t]*(?:[:=]|%3[AaDd])[ \t]*(?:\\?["'])?"""
    r"(?P<secret>[A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])"
)

# kind -> pattern. Kinds name what was found: "[REDACTED:openai_key]". A pattern with a
# group named ``secret`` masks that group only (the label, scheme or user name stays).
# Patterns apply in this order, each to the previous one's output: Anthropic before
# OpenAI (both start with "sk-").
DEFAULT_SECRET_PATTERNS: tuple[tuple[str, str], ...] = (
    ("pgp_private_key",
     r"-----BEGIN PGP PRIVATE KEY BLOCK-----[\s\S]*?(?:-----END PGP PRIVATE KEY BLOCK-----|\Z)"),
    ("private_key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"),
    ("anthropic_key", _token("sk-ant-", r"[A-Za-z0-9_\-]{16,}")),
    ("openai_key", _token("sk-", r"(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}")),
    ("stripe_key", r"[rs]k_(?:live|test)_(?:(?<!\w[rs]k_(?:live|test)_)|(?<=%[0-9A-Fa-f]{2}[rs]k_(?:live|test)_))"
                   r"[A-Za-z0-9]{16,}"),
    ("slack_token", _token("xox", r"[abcdeprs](?:\.xox[a-z])?-(?=[A-Za-z\-]*[0-9])[A-Za-z0-9\-]{10,}")),
    ("google_api_key", _token("AIza", r"[0-9A-Za-z_\-]{35}(?![0-9A-Za-z_\-])")),
    ("huggingface_token", _token("hf_", r"[A-Za-z0-9]{30,}")),
    ("aws_access_key", r"A[KS]IA(?:(?<!\wA[KS]IA)|(?<=%[0-9A-Fa-f]{2}A[KS]IA))[0-9A-Z]{16}\b"),
    # aws_secret_access_key, AWS_SECRET_ACCESS_KEY, "SecretAccessKey", secret-access-key
    ("aws_secret_key", r"[Ss](?:ecret|ECRET)(?<![A-Za-z0-9][Ss]ecret)(?<![A-Za-z0-9][Ss]ECRET)"
                       r"(?i:[_\-. ]?access[_\-. ]?key)" + _AWS_SECRET_VALUE),
    # aws_secret_key, AWS_SECRET_KEY, "AWS Secret Key"
    ("aws_secret_key", r"[Aa](?<![A-Za-z0-9][Aa])(?i:ws)[_\-. ]?[Ss](?:ecret|ECRET)(?i:[_\-. ]?key)"
                       + _AWS_SECRET_VALUE),
    ("github_token", _token("g", r"(?:h[pousr]_[A-Za-z0-9]{30,}|ithub_pat_[A-Za-z0-9_]{22,})")),
    ("jwt", _token("eyJ", r"[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*")),
    # scheme://user:password@host: the password goes, the rest stays readable.
    ("url_password", r"://(?<=[A-Za-z0-9+.\-]://)[^\s/?#@:\[\]]*:(?P<secret>[^\s/?#\[\]]+)(?=@)"),
    # Authorization values: the scheme word stays, the credential goes. A credential
    # must hold a digit or a symbol, so English ("basic understanding") is left alone.
    # The space may be form-encoded ("Bearer+...") or percent-encoded ("Bearer%20...").
    ("bearer", r"earer(?<=[Bb]earer)(?<![A-Za-z][Bb]earer)(?:[ +]|%20)[ \t]*"
               r"(?P<secret>(?=[A-Za-z0-9._~+/=%\-]*[0-9._~+/=%\-])[A-Za-z0-9._~+/=%\-]{16,})"),
    ("basic_auth", r"Basic(?<![A-Za-z]Basic)(?:[ +]|%20)[ \t]*"
                   r"(?P<secret>(?=[A-Za-z0-9+/%]*[0-9+/=%])[A-Za-z0-9+/]{12,}(?:(?:%3[Dd]){1,2}|={0,2}))"),
)

# kind -> literal fragments at least one of which every match of that kind's default
# patterns contains: a string holding none of them skips those regexes. A pattern not
# in the defaults has no triggers, so it always runs.
_DEFAULT_TRIGGERS: dict[str, tuple[str, ...]] = {
    "pgp_private_key": ("-----BEGIN",),
    "private_key": ("-----BEGIN",),
    "anthropic_key": ("sk-ant-",),
    "openai_key": ("sk-",),
    "stripe_key": ("k_live_", "k_test_"),
    "slack_token": ("xox",),
    "google_api_key": ("AIza",),
    "huggingface_token": ("hf_",),
    "aws_access_key": ("AKIA", "ASIA"),
    "aws_secret_key": ("ecret", "ECRET"),
    "github_token": ("ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_"),
    "jwt": ("eyJ",),
    "url_password": ("://",),
    "bearer": ("earer",),
    "basic_auth": ("Basic",),
}

# Characters from rare to common in prose. A trigger is looked for only when its rarest
# character is in the text (one memchr): most triggers cost nothing on plain English.
_RARITY = "_%=:@/+-~\\|^JQXZqzjxKVYUWGFPkvOLHNMDBCRESTIA"

# Where a card or phone number may start: not glued to a word, a number, a version, a
# path or a mask (except after "tel:"), nor a group of a longer number ("DE89 3704 ...",
# also once masked: masking again must change nothing). Written after the first
# character (see _token).
_NUMBER_START = (
    r"(?<![0-9][ .\-].)(?<!number\][ .\-].)(?<!phone\][ .\-].)(?<!iban\][ .\-].)"
)
_PHONE_START = r"(?:(?<![\w+.\-/:\]].)|(?<=tel:.))" + _NUMBER_START
_PHONE_END = r"(?![\w\-/:]|[.,][0-9])"

# Opt-in personal data: kind -> pattern, masked as "[REDACTED:kind]" when the kind is
# enabled and its check passes (Luhn for cards, ISO 13616 mod-97 for IBANs, a digit
# count for phones). Deliberately conservative: a bare number, a date, a time, a
# version or an id is left alone. E-mail is looked for only around each "@"; the others
# only in text with seven digits close together (see _CLUSTER).
DEFAULT_PERSONAL_DATA_PATTERNS: tuple[tuple[str, str], ...] = (
    # ASCII addresses with a dotted domain: "ops@localhost" is left alone.
    ("email", r"(?<![A-Za-z0-9._%+\-])[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*"
              r"\.[A-Za-z]{2,24}(?![A-Za-z0-9\-])"),
    # Upper-case, as printed, contiguous or in groups of four; the country's length and
    # the mod-97 check decide how much of the match is the IBAN.
    ("iban", r"[A-Z](?<![A-Za-z0-9][A-Z])[A-Z][0-9]{2}(?: ?[A-Z0-9]){11,30}(?![A-Za-z0-9])"),
    # 13-19 digits, first 2-6 (every major network; epoch milliseconds start with 1),
    # contiguous or in groups of four (Amex and Diners 4-6-5, 4-6-4), then Luhn.
    ("card_number", r"[2-6](?<![\w.\-+\]][2-6])" + _NUMBER_START
                    + r"(?:[0-9]{3}(?:[ \-]?[0-9]{4}){2}[ \-]?[0-9]{1,4}(?:[ \-]?[0-9]{3})?"
                    r"|(?<=3)[0-9]{3}[ \-]?[0-9]{6}[ \-]?[0-9]{4,5})(?![\w\-]|\.[0-9])"),
    # "+" and a country code (E.164: 7-15 digits, separators optional).
    ("phone", r"\+" + _PHONE_START + r"[1-9](?:[0-9]{0,3}(?:[ .\-]?\([0-9]{1,4}\)|[ .\-][0-9]{1,10}){1,6}"
              r"|[0-9]{6,14})" + _PHONE_END),
    # North American with separators: (415) 555-0100, 415-555-0100, 415.555.0100,
    # 415 555 0100, 1-800-555-0100.
    ("phone", r"[(1-9]" + _PHONE_START + r"(?:(?<=1)[ .\-](?:\([2-9][0-9]{2}\) ?|[2-9][0-9]{2}[ .\-])"
              r"|(?<=\()[2-9][0-9]{2}\) ?|(?<=[2-9])[0-9]{2}[ .\-])[2-9][0-9]{2}[ .\-][0-9]{4}" + _PHONE_END),
    # National, with a trunk 0, in groups split by one kind of separator, 10-11 digits:
    # 020 7946 0958, 06 12 34 56 78, 030-1234-5678. A digit run without "+" or
    # separators is never a phone number.
    ("phone", r"0" + _PHONE_START + r"[1-9][0-9]{0,4}(?P<sep>[ \-])[0-9]{2,8}(?:(?P=sep)[0-9]{2,4}){0,3}"
              + _PHONE_END),
)

# IBAN length by country (SWIFT IBAN registry).
_IBAN_LENGTHS: dict[str, int] = {
    country: length
    for length, countries in (
        (15, "NO"), (16, "BE"), (18, "DK FI FK FO GL NL SD"), (19, "MK SI"),
        (20, "AT BA EE KZ LT LU MN XK"), (21, "CH HR LI LV"), (22, "BG BH CR DE GB GE IE ME RS VA"),
        (23, "AE GI IL IQ OM SO TL"), (24, "AD CZ ES MD PK RO SA SE SK TN VG"), (25, "LY PT ST"),
        (26, "IS TR"), (27, "BI DJ FR GR IT MC MR SM"), (28, "AL AZ BY CY DO GT HN HU LB NI PL SV"),
        (29, "BR EG PS QA UA"), (30, "JO KW MU YE"), (31, "MT SC"), (32, "LC"), (33, "RU"),
    )
    for country in countries.split()
}

# Keys whose values are secrets whatever they look like. Matched on the key's words
# (split on _ - . and spaces), so "max_tokens" is not a token but "auth_token" is.
DEFAULT_SECRET_KEYS: tuple[str, ...] = (
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "apikey",
    "api_key",
    "access_key",
    "private_key",
    "secret_key",
    "authorization",
    "auth",
    "cookie",
    "credential",
    "credentials",
    "session_id",
)

_WORD_SPLIT = re.compile(r"[_\-.\s]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")

# -- free-text key=value pairs --------------------------------------------------------
# A key is a run of ASCII letters, digits, "_", "." and "-" (a "%XX" escape before it
# is not part of it), found from the secret words in it; then an optional closing quote
# and "=", ":", "%3D" or "%3A". After it: a quoted value (its quotes stay, so JSON stays
# JSON), a JSON-escaped quoted value (JSON inside a JSON string), or a bare value, which
# ends at white space, a quote, a bracket, "&" (or "%26"), "," or ";".
_KEY_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")
_KEY_MAX = 64
_KEY_RUN = re.compile(r"[A-Za-z0-9_.\-]*")
_HEX = frozenset("0123456789ABCDEFabcdef")
_SEPARATOR = re.compile(r"""(\\?["'])?[ \t]*(?:[=:]|%3[AaDd])(?:[ \t]|%20)*""")
_QUOTED = {
    '"': re.compile(r'"((?:[^"\\\n]|\\.)*)"'),
    "'": re.compile(r"'((?:[^'\\\n]|\\.)*)'"),
    '\\"': re.compile(r'\\"((?:[^"\\\n]|\\[^"\n])*)\\"'),
    "\\'": re.compile(r"\\'((?:[^'\\\n]|\\[^'\n])*)\\'"),
}
_BARE = re.compile(r"""(?![:=])(?:(?!%26)[^\s"'\\&,;<>{}\[\]()])+""")
# An auth scheme before the credential stays: "Authorization: Bearer [REDACTED:...]".
_SCHEME = re.compile(r"(?ai:bearer|basic|digest|token)(?:[ +]|%20)+")
_MASK = re.compile(r"\[REDACTED:[^\[\]\s]*\]")
_NOT_A_SECRET = frozenset({"null", "None", "nil", "undefined", "true", "false", "True", "False"})
_FIELD_MASK = "[REDACTED:field]"
# Lower-cases ASCII letters only, so that indexes in the result are indexes in the text.
_ASCII_LOWER = {c: c + 32 for c in range(ord("A"), ord("Z") + 1)}
_DIGITS = "0123456789"
# Seven digits, each within three separators of the next: every card, phone number and
# IBAN the checks accept holds such a cluster; a text without one skips their regexes.
_CLUSTER = re.compile(r"[0-9](?:[ .\-()]{0,3}[0-9]){6}")
_NON_DIGITS = re.compile(r"([^0-9]+)")
_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")

MaskCallable = Callable[[str], str]
_Replace = Callable[[re.Match[str]], str]
_Triggers = tuple[tuple[str, tuple[tuple[str, int], ...]], ...]


@dataclass(frozen=True)
class RedactionPolicy:
    """What agentaudit removes before anything is persisted.

    Args:
        secret_tools: tool names whose firing step keeps no narration.
        secret_tool_prefixes: name prefixes with the same effect (``http_``).
        secret_keys: argument and payload keys whose values are always masked; also the
            keys whose values are masked in free text (``password=...``, ``token: ...``).
        patterns: ``(kind, regex)`` pairs masked as ``[REDACTED:kind]`` in every string,
            in order. A group named ``secret`` in a regex masks that group only.
        personal_data: opt-in masking of personal data in every string: True for every
            kind (``email``, ``iban``, ``card_number``, ``phone``; see
            ``DEFAULT_PERSONAL_DATA_PATTERNS``), a list of some of them, or False (the
            default) for none.
        mask: a callable ``str -> str`` run last on every persisted string. If it raises,
            the field is replaced by a placeholder and a fault is counted.
        enabled: False turns every layer off (for tests of raw capture, never production).
    """

    secret_tools: tuple[str, ...] = ("mcp_call", "email_send")
    secret_tool_prefixes: tuple[str, ...] = ("http_",)
    secret_keys: tuple[str, ...] = DEFAULT_SECRET_KEYS
    patterns: tuple[tuple[str, str], ...] = DEFAULT_SECRET_PATTERNS
    mask: MaskCallable | None = None
    enabled: bool = True
    personal_data: bool | tuple[str, ...] = False
    _regexes: tuple[tuple[re.Pattern[str], _Replace | str], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    _triggers: _Triggers = field(init=False, repr=False, compare=False, default=())
    _untriggered: int = field(init=False, repr=False, compare=False, default=0)
    _key_words: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _key_phrases: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _key_hint: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _key_literals: tuple[str, ...] | None = field(init=False, repr=False, compare=False, default=None)
    _field_literals: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _key_prefilter: tuple[str, ...] | None = field(init=False, repr=False, compare=False, default=None)
    _personal_kinds: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _email: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _numbers: tuple[tuple[re.Pattern[str], _Replace], ...] = field(
        init=False, repr=False, compare=False, default=()
    )
    _key_cache: dict[str, bool] = field(init=False, repr=False, compare=False, default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("secret_tools", "secret_tool_prefixes", "secret_keys"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ValueError(f"RedactionPolicy.{name} must be a list of strings, got {value!r}")
            object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.mask is not None and not callable(self.mask):
            raise ValueError(f"RedactionPolicy.mask must be callable, got {type(self.mask).__name__}")
        self._init_patterns()
        self._init_keys()
        self._init_personal()

    def _init_patterns(self) -> None:
        regexes: list[tuple[re.Pattern[str], _Replace | str]] = []
        literals: dict[str, int] = {}
        untriggered = 0
        defaults = set(DEFAULT_SECRET_PATTERNS)
        for i, pair in enumerate(self.patterns):
            try:
                kind, regex = pair
                if not isinstance(regex, str):
                    raise TypeError(f"the regex is a {type(regex).__name__}, not a str")
                compiled = re.compile(regex)
            except (TypeError, ValueError, re.error) as exc:
                raise ValueError(f"RedactionPolicy.patterns[{i}] is not a (kind, regex) pair: {exc}") from None
            kind = str(kind)
            regexes.append((compiled, _replacer(f"[REDACTED:{kind}]", "secret" in compiled.groupindex)))
            if (kind, regex) in defaults:
                for literal in _DEFAULT_TRIGGERS[kind]:
                    literals[literal] = literals.get(literal, 0) | 1 << i
            else:
                untriggered |= 1 << i
        object.__setattr__(self, "patterns", tuple(tuple(p) for p in self.patterns))
        object.__setattr__(self, "_regexes", tuple(regexes))
        object.__setattr__(self, "_triggers", _gate(literals))
        object.__setattr__(self, "_untriggered", untriggered)

    def _init_keys(self) -> None:
        words = {k.lower() for k in self.secret_keys if "_" not in k}
        phrases = tuple(k.lower() for k in self.secret_keys if "_" in k)
        object.__setattr__(self, "_key_words", frozenset(words))
        object.__setattr__(self, "_key_phrases", phrases)
        hints = [re.escape(w) for w in words] + [
            "[_\\-]?".join(re.escape(part) for part in p.split("_")) for p in phrases
        ]
        object.__setattr__(self, "_key_hint", re.compile("|".join(hints), re.I) if hints else None)
        object.__setattr__(self, "_key_literals", _hint_literals(words, phrases))
        # What every secret key holds once lowered: each word, each phrase's first part.
        # A key holding none is not secret (is_secret_key's fast "no"), and free text
        # without one of them holds no secret key.
        found = {w for w in words if w}
        found.update(next(part for part in p.split("_") if part) for p in phrases if p.strip("_"))
        object.__setattr__(self, "_field_literals", tuple(sorted(_cover(found))))
        if "" not in words and all(p.strip("_") for p in phrases):
            object.__setattr__(self, "_key_prefilter", self._field_literals)

    def _init_personal(self) -> None:
        chosen = self.personal_data
        known = tuple(dict.fromkeys(kind for kind, _ in DEFAULT_PERSONAL_DATA_PATTERNS))
        if chosen is True:
            kinds = known
        elif chosen is False or chosen is None:
            kinds = ()
        elif isinstance(chosen, str) or not isinstance(chosen, Iterable):
            raise ValueError(f"RedactionPolicy.personal_data must be a bool or a list of kinds, got {chosen!r}")
        else:
            wanted = tuple(str(k) for k in chosen)
            unknown = sorted(set(wanted) - set(known))
            if unknown:
                raise ValueError(f"RedactionPolicy.personal_data: unknown kind(s) {unknown}; known: {list(known)}")
            object.__setattr__(self, "personal_data", wanted)
            kinds = tuple(k for k in known if k in wanted)
        object.__setattr__(self, "_personal_kinds", kinds)
        numbers: list[tuple[re.Pattern[str], _Replace]] = []
        for kind, regex in DEFAULT_PERSONAL_DATA_PATTERNS:
            if kind not in kinds:
                continue
            if kind == "email":
                object.__setattr__(self, "_email", re.compile(regex))
            else:
                replace = partial(_mask_checked, f"[REDACTED:{kind}]", _PERSONAL_CHECKS[kind])
                numbers.append((re.compile(regex), replace))
        object.__setattr__(self, "_numbers", tuple(numbers))

    # -- the seed's rule ------------------------------------------------------------
    def is_secret_tool(self, name: str) -> bool:
        return name in self.secret_tools or name.startswith(self.secret_tool_prefixes)

    def step_fires_secret_tool(self, tool_names: Iterable[str]) -> bool:
        """Whether a step's narration must be withheld (it fired a secret-bearing tool)."""
        if not self.enabled:
            return False
        return any(self.is_secret_tool(n) for n in tool_names)

    # -- formats and keys -------------------------------------------------------------
    def mask_secrets(self, text: str) -> str:
        """``text`` with every well-known secret format replaced by ``[REDACTED:kind]``,
        the values of secret-looking ``key=value`` / ``key: value`` pairs by
        ``[REDACTED:field]``, and the enabled kinds of personal data by
        ``[REDACTED:kind]``. Idempotent; never raises on a str."""
        if not self.enabled:
            return text
        # Formats: a regex runs only when one of its literal fragments is in the text.
        active = self._untriggered
        for gate, literals in self._triggers:  # plain loops: cheaper than any() over a generator
            if gate in text:
                for literal, patterns in literals:
                    if literal in text:
                        active |= patterns
        i = 0
        while active:
            if active & 1:
                regex, replace = self._regexes[i]
                text = regex.sub(replace, text)
            active >>= 1
            i += 1
        # Secret keys in free text: none without a separator.
        if self._field_literals and ("=" in text or ":" in text or "%3" in text):
            text = self._mask_fields(text)
        if self._personal_kinds:
            text = self._mask_personal(text)
        return text

    def _key_ends(self, text: str, by_separator: bool = True) -> tuple[list[int], bool]:
        """Where the keys that may be secret end, in order, and whether they were found
        from each separator: so while there are few for the text's length (prose with a
        colon), else from each occurrence of a secret word (JSON and logs hold many
        separators). Either way _mask_fields keeps those that end right before a
        separator and hold a secret word, so both ways find the same keys."""
        ends: set[int] = set()
        if by_separator:
            most = 2 + len(text) // 128
            for mark in ("=", ":", "%3"):
                at = text.find(mark)
                while at >= 0:
                    if len(ends) >= most:
                        return self._key_ends(text, False)[0], False
                    if mark == ":" and text.startswith("[REDACTED", at - 9):
                        at = text.find(mark, at + 1)
                        continue  # a mask, which _mask_fields skips too
                    end = at
                    while end > 0 and text[end - 1] in " \t":
                        end -= 1
                    if end > 0 and text[end - 1] in "\"'":
                        end -= 1
                        if end > 0 and text[end - 1] == "\\":
                            end -= 1
                    ends.add(end)
                    at = text.find(mark, at + 1)
            return sorted(ends), True
        lower = text.lower() if text.isascii() else text.translate(_ASCII_LOWER)
        for literal in self._field_literals:
            at = lower.find(literal)
            while at >= 0:
                key_run = _KEY_RUN.match(text, at)
                end = key_run.end() if key_run is not None else at  # the pattern matches ""
                ends.add(end)
                at = lower.find(literal, end)
        return sorted(ends), False

    def _mask_fields(self, text: str, by_separator: bool = True) -> str:
        out: list[str] = []
        copied = 0  # text[:copied] is in out
        literals = self._field_literals
        ends, by_separator = self._key_ends(text, by_separator)
        for end in ends:
            floor = max(copied, end - _KEY_MAX)
            if by_separator:  # (else each end is that of a secret word's run)
                window = text[floor:end].lower()
                for literal in literals:  # the key is in the window: a fast "no" for prose
                    if literal in window:
                        break
                else:
                    continue
            start = end
            while start > floor and text[start - 1] in _KEY_CHARS:
                start -= 1
            if start >= 1 and text[start - 1] == "%" and start + 2 < end and text[start] in _HEX \
                    and text[start + 1] in _HEX:
                start += 2  # "%26password=": the escape is not part of the key
            if start == end:
                continue
            key = text[start:end]
            if key == "REDACTED" and text[start - 1 : start] == "[":
                continue  # a mask: "[REDACTED:kind]"
            if not self.is_secret_key(key):
                continue
            separator = _SEPARATOR.match(text, end)
            if separator is None:
                continue
            value = _field_value(text, separator.end(), separator.group(1) or "")
            if value is None:
                continue
            value_start, value_end, replacement = value
            out.append(text[copied:value_start])
            out.append(replacement)
            copied = value_end
        if not out:
            return text
        out.append(text[copied:])
        return "".join(out)

    def _mask_personal(self, text: str) -> str:
        email = self._email
        if email is not None and "@" in text:
            text = _mask_emails(email, text)
        if self._numbers:
            for d in _DIGITS:  # a plain loop: most text has no digit at all
                if d in text:
                    if sum(map(text.count, _DIGITS)) >= 7 and _CLUSTER.search(text) is not None:
                        for regex, replace in self._numbers:
                            text = regex.sub(replace, text)
                    break
        return text

    def is_secret_key(self, key: str) -> bool:
        if not self.enabled:
            return False
        known = self._key_cache.get(key)
        if known is not None:
            return known
        prefilter = self._key_prefilter
        if prefilter is not None:
            lower = key.lower()
            for literal in prefilter:  # a plain loop: cheaper than any() over a generator
                if literal in lower:
                    break
            else:
                return False
        normal = _CAMEL.sub("_", key).lower()
        words = _WORD_SPLIT.split(normal)
        if self._key_words.intersection(words):
            secret = True
        else:
            joined = "_".join(words)
            secret = any(phrase in joined for phrase in self._key_phrases)
        # The same few keys come back in every call: remember them (a bounded memo).
        if len(key) <= _KEY_MAX and len(self._key_cache) < 1024:
            self._key_cache[key] = secret
        return secret

    def mask_keys(self, value: Any) -> Any:
        """JSON-like ``value`` with the values under secret-looking keys masked, at any depth."""
        if not self.enabled:
            return value
        if isinstance(value, Mapping):
            return {
                k: ("[REDACTED:field]" if isinstance(k, str) and self.is_secret_key(k) and v not in (None, "")
                    else self.mask_keys(v))
                for k, v in value.items()
            }
        if isinstance(value, list):
            return [self.mask_keys(v) for v in value]
        return value

    def may_hold_secret_key(self, json_text: str) -> bool:
        """A cheap pre-check on JSON text: could any key in it be secret-looking?"""
        if not self.enabled or self._key_hint is None:
            return False
        literals = self._key_literals
        if literals is not None and json_text.isascii():
            # What the regex matches, as plain substrings of the lowered text: a few
            # dozen `in` tests cost less than one case-insensitive alternation.
            lower = json_text.lower()
            for literal in literals:  # a plain loop: cheaper than any() over a generator
                if literal in lower:
                    break
            else:
                return False
            return True
        return self._key_hint.search(json_text) is not None


def _replacer(mask: str, group_only: bool) -> _Replace | str:
    """What ``re.sub`` replaces a match with: the mask, or (a pattern with a ``secret``
    group) the match with that group masked. Plain functions and partials, so that a
    policy still pickles."""
    if not group_only:
        return mask.replace("\\", "\\\\")  # a template: keep backslashes literal
    return partial(_mask_group, mask)


def _mask_group(mask: str, match: re.Match[str]) -> str:
    start, end = match.span("secret")
    if start < 0:
        return mask
    text = match.string
    return text[match.start() : start] + mask + text[end : match.end()]


def _gate(literals: Mapping[str, int]) -> _Triggers:
    """The trigger literals (with the patterns each one wakes) grouped under their rarest
    character, ``""`` when none is rare: a text holds a literal only if it holds its
    gate. A literal holding another is dropped, its patterns woken by the other."""
    kept = _cover(literals)
    wakes = {k: 0 for k in kept}
    for literal, patterns in literals.items():
        for k in kept:
            if k in literal:
                wakes[k] |= patterns
    groups: dict[str, list[tuple[str, int]]] = {}
    for literal in kept:
        gate = next((c for c in _RARITY if c in literal), "")
        groups.setdefault(gate, []).append((literal, wakes[literal]))
    return tuple((gate, tuple(ls)) for gate, ls in sorted(groups.items(), key=lambda g: g[0] == ""))


def _cover(literals: Iterable[str]) -> tuple[str, ...]:
    """The literals, minus duplicates and those holding another (implied by it)."""
    kept: list[str] = []
    for literal in sorted(set(literals), key=len):
        if not any(k in literal for k in kept):
            kept.append(literal)
    return tuple(kept)


def _field_value(text: str, pos: int, key_quote: str) -> tuple[int, int, str] | None:
    """Where the value after a secret key's separator is, and what replaces it; None
    when there is nothing to mask (empty, null, a structure, already masked)."""
    for quote in ('\\"', "\\'", '"', "'"):
        if text.startswith(quote, pos):
            quoted = _QUOTED[quote].match(text, pos)
            if quoted is not None:
                start, end = quoted.span(1)
                scheme = _SCHEME.match(text, start, end)
                if scheme is not None:
                    start = scheme.end()
                rest = text[start:end]
                if not rest or _MASK.fullmatch(rest):
                    return None
                return start, end, _FIELD_MASK
            pos += len(quote)  # unterminated: read a bare value after it
            break
    scheme = _SCHEME.match(text, pos)
    if scheme is not None:
        pos = scheme.end()
    bare = _BARE.match(text, pos)
    if bare is None or bare.group() in _NOT_A_SECRET:
        return None
    if scheme is None and key_quote.endswith('"'):
        # "key": 5 in JSON: a string in its place keeps the JSON valid.
        return bare.start(), bare.end(), key_quote + _FIELD_MASK + key_quote
    return bare.start(), bare.end(), _FIELD_MASK


def _mask_emails(regex: re.Pattern[str], text: str) -> str:
    """E-mail addresses masked, looked for only around each "@" (the regex from its
    local part on): a scan of the whole text would cost 20 times more."""
    out: list[str] = []
    copied = 0
    at = text.find("@")
    while at >= 0:
        start, floor = at, max(copied, at - 64)
        while start > floor and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        found = regex.match(text, start) if start < at else None
        if found is not None:
            out.append(text[copied:start])
            out.append("[REDACTED:email]")
            copied = found.end()
        at = text.find("@", max(at + 1, copied))
    if not out:
        return text
    out.append(text[copied:])
    return "".join(out)


def _mask_checked(mask: str, check: Callable[[str], int], match: re.Match[str]) -> str:
    """The match with its head masked, as long as ``check`` says (0: left alone)."""
    found = match.group()
    n = check(found)
    return mask + found[n:] if n > 0 else found


def _luhn_ok(digits: str) -> bool:
    total = 0
    for i, d in enumerate(reversed(digits)):
        n = ord(d) - 48
        if i % 2:
            n = n * 2 - 9 if n > 4 else n * 2
        total += n
    return total % 10 == 0


def _longest(found: str, ok: Callable[[str], bool]) -> int:
    """How much of ``found`` is what ``ok`` accepts (0 for none): the longest head of
    it made of whole digit groups. The regex takes every group it can, the check may
    want fewer: "4111 1111 1111 1111 415" is a card number and 415."""
    parts = _NON_DIGITS.split(found)  # digits, separators, digits, ...
    for n in range(len(parts), 0, -2):
        head = "".join(parts[:n])
        if ok(head):
            return len(head)
    return 0


def _card_ok(found: str) -> bool:
    digits = found.replace(" ", "").replace("-", "")
    return 13 <= len(digits) <= 19 and _luhn_ok(digits)


def _phone_ok(found: str) -> bool:
    n = sum(map(found.count, _DIGITS))
    return 7 <= n <= 15 if found.startswith("+") else 10 <= n <= 11


def _iban_length(found: str) -> int:
    """How much of ``found`` is a valid IBAN (0 for none): as many characters as its
    country's IBANs have, holding seven clustered digits, with mod-97 == 1."""
    size = _IBAN_LENGTHS.get(found[:2])
    if size is None:
        return 0
    where = [i for i, c in enumerate(found) if c != " "]
    if len(where) < size or _CLUSTER.search(found, 0, where[size - 1] + 1) is None:
        return 0
    compact = "".join(found[i] for i in where[:size])
    moved = compact[4:] + compact[:4]
    if int("".join(str(int(c, 36)) for c in moved)) % 97 != 1:
        return 0
    return where[size - 1] + 1


_PERSONAL_CHECKS: dict[str, Callable[[str], int]] = {
    "iban": _iban_length,
    "card_number": partial(_longest, ok=_card_ok),
    "phone": partial(_longest, ok=_phone_ok),
}


def _hint_literals(words: Iterable[str], phrases: Iterable[str]) -> tuple[str, ...] | None:
    """Every text the key-hint regex matches, when they are few and ASCII: each word,
    and each phrase with its parts joined by nothing, ``_`` or ``-``."""
    out: list[str] = list(words)
    for phrase in phrases:
        variants = [""]
        parts = phrase.split("_")
        for i, part in enumerate(parts):
            joins = ("",) if i == 0 else ("", "_", "-")
            variants = [v + j + part for v in variants for j in joins]
            if len(variants) > 64:
                return None
        out.extend(variants)
    if not out or not all(literal.isascii() and literal for literal in out):
        return None
    return tuple(out)
