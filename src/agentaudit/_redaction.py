"""Redaction before persistence.

Three layers, in order: the seed's rule (a step that fires a secret-bearing tool keeps
no narration, since the narration may echo the secret it is about to send); masking of
well-known secret formats in every persisted string and of values under secret-looking
keys in tool arguments; then the user's own ``mask`` callable, last.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = ["DEFAULT_SECRET_KEYS", "DEFAULT_SECRET_PATTERNS", "RedactionPolicy"]

# kind -> pattern. Kinds name what was found: "[REDACTED:openai_key]".
# Anthropic before OpenAI: both start with "sk-".
DEFAULT_SECRET_PATTERNS: tuple[tuple[str, str], ...] = (
    ("private_key", r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|\Z)"),
    ("anthropic_key", r"\bsk-ant-[A-Za-z0-9_\-]{16,}"),
    ("openai_key", r"\bsk-(?:proj-|svcacct-|admin-)?[A-Za-z0-9_\-]{20,}"),
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    ("github_token", r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|github_pat_[A-Za-z0-9_]{22,})"),
    ("jwt", r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*"),
    # Authorization values: the scheme word stays, the credential goes. A credential
    # must hold a digit or a symbol, so English ("basic understanding") is left alone.
    ("bearer", r"(?<=\b[Bb]earer )[ \t]*(?=[A-Za-z0-9._~+/=\-]*[0-9._~+/=\-])[A-Za-z0-9._~+/=\-]{16,}"),
    ("basic_auth", r"(?<=\bBasic )[ \t]*(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{12,}={0,2}"),
)

# Literal fragments at least one of which every default pattern's match contains: a
# string holding none of them skips the regex (which costs ~7 µs even on short text).
_DEFAULT_TRIGGERS: tuple[str, ...] = (
    "-----BEGIN", "sk-", "AKIA", "ASIA", "ghp_", "gho_", "ghu_", "ghs_", "ghr_", "github_pat_",
    "eyJ", "earer ", "Basic ",
)

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

MaskCallable = Callable[[str], str]


@dataclass(frozen=True)
class RedactionPolicy:
    """What agentaudit removes before anything is persisted.

    Args:
        secret_tools: tool names whose firing step keeps no narration.
        secret_tool_prefixes: name prefixes with the same effect (``http_``).
        secret_keys: argument and payload keys whose values are always masked.
        patterns: ``(kind, regex)`` pairs masked as ``[REDACTED:kind]`` in every string.
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
    _compiled: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _kinds: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _key_words: frozenset[str] = field(init=False, repr=False, compare=False, default=frozenset())
    _key_phrases: tuple[str, ...] = field(init=False, repr=False, compare=False, default=())
    _triggers: tuple[str, ...] | None = field(init=False, repr=False, compare=False, default=None)
    _key_hint: re.Pattern[str] | None = field(init=False, repr=False, compare=False, default=None)
    _key_literals: tuple[str, ...] | None = field(init=False, repr=False, compare=False, default=None)

    def __post_init__(self) -> None:
        for name in ("secret_tools", "secret_tool_prefixes", "secret_keys"):
            value = getattr(self, name)
            if isinstance(value, str) or not isinstance(value, Iterable):
                raise ValueError(f"RedactionPolicy.{name} must be a list of strings, got {value!r}")
            object.__setattr__(self, name, tuple(str(v) for v in value))
        if self.mask is not None and not callable(self.mask):
            raise ValueError(f"RedactionPolicy.mask must be callable, got {type(self.mask).__name__}")
        kinds: list[str] = []
        parts: list[str] = []
        for i, pair in enumerate(self.patterns):
            try:
                kind, regex = pair
                re.compile(regex)
            except (TypeError, ValueError, re.error) as exc:
                raise ValueError(f"RedactionPolicy.patterns[{i}] is not a (kind, regex) pair: {exc}") from None
            kinds.append(kind)
            parts.append(f"(?P<k{i}>{regex})")
        object.__setattr__(self, "patterns", tuple(tuple(p) for p in self.patterns))
        object.__setattr__(self, "_kinds", tuple(kinds))
        object.__setattr__(self, "_compiled", re.compile("|".join(parts)) if parts else None)
        words = {k.lower() for k in self.secret_keys if "_" not in k}
        phrases = tuple(k.lower() for k in self.secret_keys if "_" in k)
        object.__setattr__(self, "_key_words", frozenset(words))
        object.__setattr__(self, "_key_phrases", phrases)
        defaults = self.patterns == DEFAULT_SECRET_PATTERNS
        object.__setattr__(self, "_triggers", _DEFAULT_TRIGGERS if defaults else None)
        hints = [re.escape(w) for w in words] + [
            "[_\\-]?".join(re.escape(part) for part in p.split("_")) for p in phrases
        ]
        object.__setattr__(self, "_key_hint", re.compile("|".join(hints), re.I) if hints else None)
        object.__setattr__(self, "_key_literals", _hint_literals(words, phrases))

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
        """``text`` with every well-known secret format replaced by ``[REDACTED:kind]``."""
        if not self.enabled or self._compiled is None:
            return text
        triggers = self._triggers
        if triggers is not None:
            for fragment in triggers:  # a plain loop: cheaper than any() over a generator
                if fragment in text:
                    break
            else:
                return text
        kinds = self._kinds

        def _replace(match: re.Match[str]) -> str:
            return f"[REDACTED:{kinds[int(match.lastgroup[1:])]}]"  # type: ignore[index]

        return self._compiled.sub(_replace, text)

    def is_secret_key(self, key: str) -> bool:
        if not self.enabled:
            return False
        normal = _CAMEL.sub("_", key).lower()
        words = _WORD_SPLIT.split(normal)
        if self._key_words.intersection(words):
            return True
        joined = "_".join(words)
        return any(phrase in joined for phrase in self._key_phrases)

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
