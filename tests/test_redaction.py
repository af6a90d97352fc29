"""Redaction: secret formats, free-text secret keys, opt-in personal data.

Samples are assembled from pieces so that this file holds nothing that looks like a
live secret to a scanner; every number and address is a documented test value.
"""

import dataclasses
import pickle
import re
import time

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import agentaudit as aa
from agentaudit import _redaction as redaction
from agentaudit._redaction import (
    DEFAULT_PERSONAL_DATA_PATTERNS,
    DEFAULT_SECRET_PATTERNS,
    RedactionPolicy,
)

POLICY = RedactionPolicy()
PERSONAL = RedactionPolicy(personal_data=True)

ALNUM = "aB3dE5gH7jK9mN1pQ2sT4vW6yZ8"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCY" + "EXAMPLEKEY"  # AWS's documented example
SLACK_BOT = "xox" + "b-" + "123456789012-1234567890123-" + ALNUM[:24]
SLACK_USER = "xox" + "p-" + "123456789012-1234567890123-1234567890123-" + ALNUM[:20]
SLACK_REFRESH = "xox" + "e.xox" + "p-1-" + ALNUM * 2
STRIPE_LIVE = "sk" + "_live_" + ALNUM
STRIPE_RESTRICTED = "rk" + "_live_" + ALNUM
STRIPE_TEST = "sk" + "_test_" + ALNUM
STRIPE_RESTRICTED_TEST = "rk" + "_test_" + ALNUM
GOOGLE = "AI" + "za" + "Sy" + (ALNUM + "_-" + ALNUM)[:33]
HUGGINGFACE = "hf" + "_" + ALNUM + "xyzw"
OPENAI = "sk" + "-proj-" + ALNUM
PGP = (
    "-----BEGIN PGP " + "PRIVATE KEY BLOCK-----\n\nlQOYBGX" + ALNUM + "\n=Ab12\n"
    "-----END PGP " + "PRIVATE KEY BLOCK-----"
)
TOKEN = "abc123" + ALNUM  # a bearer credential: digits, 33 characters


# -- new secret formats --------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"slack {SLACK_BOT} ok", "slack [REDACTED:slack_token] ok"),
        (f"slack {SLACK_USER}", "slack [REDACTED:slack_token]"),
        (f"refresh={SLACK_REFRESH}", "refresh=[REDACTED:slack_token]"),
        (f"stripe {STRIPE_LIVE}.", "stripe [REDACTED:stripe_key]."),
        (f"stripe {STRIPE_RESTRICTED}", "stripe [REDACTED:stripe_key]"),
        (f"stripe {STRIPE_TEST}", "stripe [REDACTED:stripe_key]"),
        (f"stripe {STRIPE_RESTRICTED_TEST}", "stripe [REDACTED:stripe_key]"),
        (f"maps?key={GOOGLE}&q=x", "maps?key=[REDACTED:google_api_key]&q=x"),
        (f"HF {HUGGINGFACE} done", "HF [REDACTED:huggingface_token] done"),
        (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_access_key = [REDACTED:aws_secret_key]"),
        (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n", "AWS_SECRET_ACCESS_KEY=[REDACTED:aws_secret_key]\n"),
        (f'{{"SecretAccessKey": "{AWS_SECRET}"}}', '{"SecretAccessKey": "[REDACTED:aws_secret_key]"}'),
        (f"export AWS_SECRET_KEY='{AWS_SECRET}'", "export AWS_SECRET_KEY='[REDACTED:aws_secret_key]'"),
        (f"secret-access-key: {AWS_SECRET}", "secret-access-key: [REDACTED:aws_secret_key]"),
        (f"key:\n{PGP}\nthanks", "key:\n[REDACTED:pgp_private_key]\nthanks"),
        ("-----BEGIN PGP " + "PRIVATE KEY BLOCK-----\nlQOYBGX", "[REDACTED:pgp_private_key]"),
        ("postgres://bob:" + "hunter2" + "@db:5432/app", "postgres://bob:[REDACTED:url_password]@db:5432/app"),
        ("redis://:" + "s3cret" + "@cache:6379", "redis://:[REDACTED:url_password]@cache:6379"),
        ("amqp://user:" + "p@ss:w0rd" + "@mq/vhost", "amqp://user:[REDACTED:url_password]@mq/vhost"),
        ("jdbc:mysql://root:" + "toor" + "@10.0.0.5/db", "jdbc:mysql://root:[REDACTED:url_password]@10.0.0.5/db"),
    ],
)
def test_new_secret_formats_are_masked(text, masked):
    assert POLICY.mask_secrets(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        (f"GET /v1?key%3D{OPENAI}", "GET /v1?key%3D[REDACTED:openai_key]"),
        (f"q=a%20{OPENAI}", "q=a%20[REDACTED:openai_key]"),
        (f"Authorization=Bearer+{TOKEN}&x=1", "Authorization=Bearer+[REDACTED:bearer]&x=1"),
        (f"Authorization%3A%20Bearer%20{TOKEN}", "Authorization%3A%20Bearer%20[REDACTED:bearer]"),
        ("Authorization: Basic " + "dXNlcjpwYXNz" + "d29yZA%3D%3D", "Authorization: Basic [REDACTED:basic_auth]"),
        ("password=" + "hunter2" + "&x=1", "password=[REDACTED:field]&x=1"),
        ("https://api.example.com/v1/items?page=2&token=" + "abc123" + "&sort=asc",
         "https://api.example.com/v1/items?page=2&token=[REDACTED:field]&sort=asc"),
        ("/cb?code=ok&access_token=" + "ya29.a0Af" + "&state=1", "/cb?code=ok&access_token=[REDACTED:field]&state=1"),
        ("body=user%3Dbob%26password%3D" + "hunter2" + "%26next%3D1",
         "body=user%3Dbob%26password%3D[REDACTED:field]%26next%3D1"),
    ],
)
def test_url_and_form_encoded_forms_are_masked(text, masked):
    assert POLICY.mask_secrets(text) == masked


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("password=hunter2", "password=[REDACTED:field]"),
        ("passwd: hunter2", "passwd: [REDACTED:field]"),
        ("secret = s3", "secret = [REDACTED:field]"),
        ("token=abc", "token=[REDACTED:field]"),
        ("api_key=k-1 apikey=k-2", "api_key=[REDACTED:field] apikey=[REDACTED:field]"),
        ("access_token: t, client_secret: c;", "access_token: [REDACTED:field], client_secret: [REDACTED:field];"),
        ("DB_PASSWORD=hunter2\nDB_USER=bob", "DB_PASSWORD=[REDACTED:field]\nDB_USER=bob"),
        ("X-Api-Key: k1\r\nAccept: */*", "X-Api-Key: [REDACTED:field]\r\nAccept: */*"),
        ("authToken=t1", "authToken=[REDACTED:field]"),
        ("--password=x --user=bob", "--password=[REDACTED:field] --user=bob"),
        ("error: password=abc rejected", "error: password=[REDACTED:field] rejected"),
        ('password="hunter 2" next', 'password="[REDACTED:field]" next'),
        ("login(password='hunter2')", "login(password='[REDACTED:field]')"),
        # JSON stays JSON: quoted values keep their quotes, bare ones become strings.
        ('{"password": "hunter2", "max_tokens": 5, "token_count": 7}',
         '{"password": "[REDACTED:field]", "max_tokens": 5, "token_count": "[REDACTED:field]"}'),
        ('{"body":"{\\"password\\":\\"hunter2\\"}"}', '{"body":"{\\"password\\":\\"[REDACTED:field]\\"}"}'),
        # The scheme of an authorization value stays.
        ("Authorization: Token abc", "Authorization: Token [REDACTED:field]"),
        ('{"Authorization": "Bearer short"}', '{"Authorization": "Bearer [REDACTED:field]"}'),
        (f"Authorization: Bearer {TOKEN}", "Authorization: Bearer [REDACTED:bearer]"),
        # A more specific kind found first stays.
        (f"api_key={OPENAI}", "api_key=[REDACTED:openai_key]"),
    ],
)
def test_secret_keys_in_free_text_mask_their_values(text, masked):
    assert POLICY.mask_secrets(text) == masked


@pytest.mark.parametrize(
    "text",
    [
        "The agent looked up the weather forecast and summarised it for the user.",
        "max_tokens=5",
        "max_tokens: 512, temperature: 0.2",
        '{"max_tokens": 512, "tokens": 10, "n_tokens": 3}',
        "tokens: 10 (prompt) + 5 (completion)",
        "Basic understanding of tokens",
        "Basic+understanding",
        "a bearer of bad news",
        "The secret to success: patience",
        "author: Jane; authentication: enabled; oauth_state=xyz; session: 42",
        "Token::new() returns a token",
        "visit api.example.com:443 or https://example.com:8443/a?b=c#d",
        "https://user@example.com/path and http://[::1]:8080/",
        "sha1 da39a3ee5e6b4b0d3255bfef95601890afd80709 and " + AWS_SECRET + " unlabelled",
        "password= ", "password=", "password=null", "token: None", '{"password": "", "secret": null}',
        "password=<redacted>", "password=[hidden]",
        "2024-05-01T10:30:00Z, v1.2.3, 123e4567-e89b-12d3-a456-426614174000",
        "call me at a.b@example.com or +1 415 555 0100",  # personal data is opt-in
        "card 4111 1111 1111 1111, IBAN DE89 3704 0044 0532 0130 00",
    ],
)
def test_lookalikes_are_left_alone(text):
    assert POLICY.mask_secrets(text) == text


# -- personal data (opt-in) ------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("mail me at a.b@example.com please", "mail me at [REDACTED:email] please"),
        ("<First.Last+tag@mail.example.co.uk>", "<[REDACTED:email]>"),
        ("mailto:ops-team@example.org?subject=x", "mailto:[REDACTED:email]?subject=x"),
        ("card 4111 1111 1111 1111 exp 12/30", "card [REDACTED:card_number] exp 12/30"),
        ("card 5555-5555-5555-4444.", "card [REDACTED:card_number]."),
        ("pan=4111111111111111;", "pan=[REDACTED:card_number];"),
        ("amex 3782 822463 10005", "amex [REDACTED:card_number]"),
        ("4111 1111 1111 1111 415", "[REDACTED:card_number] 415"),
        ("020 7946 0958 12", "[REDACTED:phone] 12"),
        ("call +1 (415) 555-0100", "call [REDACTED:phone]"),
        ("+44 20 7946 0958 (UK)", "[REDACTED:phone] (UK)"),
        ("+33 6 12 34 56 78", "[REDACTED:phone]"),
        ("+14155550100", "[REDACTED:phone]"),
        ("tel:+14155550100", "tel:[REDACTED:phone]"),
        ("(415) 555-0100", "[REDACTED:phone]"),
        ("415-555-0100, 415.555.0100 or 415 555 0100",
         "[REDACTED:phone], [REDACTED:phone] or [REDACTED:phone]"),
        ("1-800-555-0100", "[REDACTED:phone]"),
        ("020 7946 0958", "[REDACTED:phone]"),
        ("06 12 34 56 78", "[REDACTED:phone]"),
        ("IBAN DE89 3704 0044 0532 0130 00 please", "IBAN [REDACTED:iban] please"),
        ("GB82WEST12345698765432", "[REDACTED:iban]"),
        ("GB82 WEST 1234 5698 7654 32 EUR", "[REDACTED:iban] EUR"),
        ("FR14 2004 1010 0505 0001 3M02 606", "[REDACTED:iban]"),
    ],
)
def test_personal_data_is_masked_when_enabled(text, masked):
    assert PERSONAL.mask_secrets(text) == masked
    assert POLICY.mask_secrets(text) == text


@pytest.mark.parametrize(
    "text",
    [
        "The agent booked 3 rooms for 2 nights at 120 EUR each.",
        "2024-05-01T10:30:00Z 2024-05-01 10:30:00.123456 on 01-02-2024 10 items, 05/01/2024",
        "at 10:30:00, 23:59, version 3.11.7, v1.2.3, 2.0.0-rc.1",
        "id 123e4567-e89b-12d3-a456-426614174000, sha da39a3ee5e6b4b0d3255bfef95601890afd80709",
        "order 4111111111111112 and 4242 4242 4242 4243 (Luhn fails)",
        "epoch 1715000000000 ms, 1715000000 s, 1715000000000000000 ns",
        "42, 1000000, 12345678, 1234567890, 98765432101234",
        "$1,234,567.89 and 1 234 567 and 12.345.678",
        "hosts 192.168.100.200, 10.0.0.1:8080",
        "ISBN 978-3-16-148410-0, page 12 of 300, +5 points, 3 x 4 = 12",
        "ops@localhost, @mention, user @ host",
        "IBAN DE89 3704 0044 0532 0130 01 (mod-97 fails), XX12 3456 7890 1234 56",
        "GB82 WEST 1234 5698 7654 33",
    ],
)
def test_personal_lookalikes_are_left_alone(text):
    assert PERSONAL.mask_secrets(text) == text


def test_personal_data_kinds_can_be_chosen():
    only_email = RedactionPolicy(personal_data=["email"])
    assert only_email.personal_data == ("email",)
    text = "a.b@example.com, +1 415 555 0100, 4111 1111 1111 1111"
    assert only_email.mask_secrets(text) == "[REDACTED:email], +1 415 555 0100, 4111 1111 1111 1111"
    no_email = RedactionPolicy(personal_data=("phone", "card_number", "iban"))
    assert no_email.mask_secrets(text) == "a.b@example.com, [REDACTED:phone], [REDACTED:card_number]"
    assert RedactionPolicy(personal_data=()).mask_secrets(text) == text
    assert RedactionPolicy().personal_data is False
    hash(only_email)  # still a frozen, hashable value
    assert dataclasses.replace(only_email, personal_data=True).mask_secrets(text).count("[REDACTED:") == 3


@pytest.mark.parametrize("bad", ["email", ["email", "ssn"], 3])
def test_bad_personal_data_values_raise(bad):
    with pytest.raises(ValueError, match="personal_data"):
        RedactionPolicy(personal_data=bad)


def test_a_policy_pickles():
    text = "password=x postgres://a:" + "b" + "@c 4111 1111 1111 1111 a.b@example.com"
    for policy in (POLICY, PERSONAL):
        assert pickle.loads(pickle.dumps(policy)).mask_secrets(text) == policy.mask_secrets(text)


def test_disabled_policy_masks_nothing():
    off = RedactionPolicy(enabled=False, personal_data=True)
    text = f"password=x {OPENAI} a.b@example.com"
    assert off.mask_secrets(text) == text


# -- custom patterns -------------------------------------------------------------------
def test_custom_patterns_replace_the_defaults_and_may_mask_a_group_only():
    policy = RedactionPolicy(patterns=[("ticket", r"TCK-[0-9]+"), ("pin", r"PIN (?P<secret>[0-9]{4})\b")])
    assert policy.mask_secrets(f"TCK-42 PIN 1234 {OPENAI}") == f"[REDACTED:ticket] PIN [REDACTED:pin] {OPENAI}"
    mixed = RedactionPolicy(patterns=[*DEFAULT_SECRET_PATTERNS, ("ticket", r"TCK-[0-9]+")])
    assert mixed.mask_secrets(f"TCK-42 {OPENAI}") == "[REDACTED:ticket] [REDACTED:openai_key]"


# -- the cheap pre-check ---------------------------------------------------------------
def _triggers_of(kind):
    return redaction._DEFAULT_TRIGGERS[kind]


SAMPLES = {
    "pgp_private_key": [PGP],
    "private_key": ["-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE\n-----END RSA " + "PRIVATE KEY-----"],
    "anthropic_key": ["sk" + "-ant-api03-" + ALNUM],
    "openai_key": [OPENAI, "x%3D" + OPENAI],
    "stripe_key": [STRIPE_LIVE, STRIPE_RESTRICTED, STRIPE_TEST, STRIPE_RESTRICTED_TEST],
    "slack_token": [SLACK_BOT, SLACK_USER, SLACK_REFRESH],
    "google_api_key": [GOOGLE],
    "huggingface_token": [HUGGINGFACE],
    "aws_access_key": ["AKIA" + "IOSFODNN7" + "EXAMPLE", "ASIA" + "IOSFODNN7" + "EXAMPLE"],
    "aws_secret_key": [f"aws_secret_access_key={AWS_SECRET}", f'"SecretAccessKey": "{AWS_SECRET}"',
                       f"AWS_SECRET_KEY: {AWS_SECRET}"],
    "github_token": ["ghp_" + "a1" * 18, "github_pat_" + "A1b2" * 8],
    "jwt": ["eyJ" + "hbGciOi" + ".eyJ" + "zdWIiOi" + ".sig_1"],
    "url_password": ["postgres://bob:" + "pw" + "@db"],
    "bearer": ["Bearer " + TOKEN, "bearer+" + TOKEN, "Bearer%20" + TOKEN],
    "basic_auth": ["Basic " + "dXNlcjpwYXNz" + "d29yZA=="],
}


def test_every_default_pattern_has_samples_and_triggers():
    assert set(SAMPLES) == {kind for kind, _ in DEFAULT_SECRET_PATTERNS} == set(redaction._DEFAULT_TRIGGERS)
    for kind, regex in DEFAULT_SECRET_PATTERNS:
        found = [m.group() for m in map(re.compile(regex).search, SAMPLES[kind]) if m is not None]
        assert found, kind
        for match in found:
            assert any(t in match for t in _triggers_of(kind)), (kind, match)
        for sample in SAMPLES[kind]:
            assert f"[REDACTED:{kind}]" in POLICY.mask_secrets(sample), (kind, sample)


# Texts around what each pattern matches; from_regex cannot guess what the lookbehind
# of "bearer" wants before its match, so that one is spelled out.
SPELLED_OUT = {"bearer": r"[Bb]earer(?:[ +]|%20)[ \t]*[A-Za-z0-9._~+/=%\-]{16,40}"}


@pytest.mark.parametrize(("kind", "regex"), DEFAULT_SECRET_PATTERNS, ids=[k for k, _ in DEFAULT_SECRET_PATTERNS])
@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_every_match_of_a_default_pattern_holds_a_trigger(kind, regex, data):
    text = data.draw(st.from_regex(SPELLED_OUT.get(kind, regex)))
    found = re.search(regex, text)
    assume(found is not None)
    assert any(t in found.group() for t in _triggers_of(kind))


def test_each_trigger_is_looked_for_only_under_a_character_it_holds():
    assert POLICY._triggers
    for gate, literals in POLICY._triggers:
        for literal, patterns in literals:
            assert gate in literal and patterns


# Fragments that reach the tricky paths far more often than random text does.
FRAGMENTS = [
    "password", "token", "max_tokens", "api_key", "Authorization", "secret", "aws_secret_access_key",
    "=", ":", ": ", " ", '"', "'", "\\", '\\"', "%3D", "%3A", "%20", "%26", "&", ",", ";", "\n",
    "Bearer ", "Bearer+", "Basic ", "sk-", "sk-ant-", "ghp_", "github_pat_", "eyJ", "AIza", "xoxb-", "hf_",
    "sk_live_", "://", "@", "[REDACTED:field]", "[REDACTED:phone]", "]", "[", "(", ")", "+", "-", ".",
    "0", "1", "4111", "1111", "+1", "(415)", "555-0100", "020", "DE89", "3704", "GB82", "WEST", "tel:",
    "a.b", "example.com", "-----BEGIN ", "PRIVATE KEY-----", "null", "\ud800", "\udfff", "é", "İ", "\u212a",
    AWS_SECRET, TOKEN, ALNUM,
]
fragment_text = st.lists(st.one_of(st.sampled_from(FRAGMENTS), st.text(max_size=3)), max_size=40).map("".join)
any_text = st.text(alphabet=st.characters(exclude_categories=()), max_size=300)


@settings(max_examples=400, deadline=None)
@given(st.one_of(any_text, fragment_text))
def test_masking_never_raises_and_is_idempotent(text):
    for policy in (POLICY, PERSONAL):
        once = policy.mask_secrets(text)
        assert isinstance(once, str)
        assert policy.mask_secrets(once) == once


@settings(max_examples=300, deadline=None)
@given(fragment_text)
def test_the_pre_check_never_skips_a_pattern_that_would_match(text):
    # The same patterns, spelled differently, carry no triggers: they always run.
    untriggered = RedactionPolicy(patterns=[(kind, f"(?:{regex})") for kind, regex in DEFAULT_SECRET_PATTERNS])
    assert untriggered._triggers == () and POLICY._triggers
    assert untriggered.mask_secrets(text) == POLICY.mask_secrets(text)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["4111", "1111", "415", "555", "0100", "0", "12", "DE89", "GB82", "WEST",
                                 " ", "-", ".", "(", ")", "+", "+1", "x", "A"]), max_size=30).map("".join))
def test_the_digit_cluster_pre_check_never_skips_a_number_that_would_be_masked(text):
    masked = text
    for regex, replace in PERSONAL._numbers:
        masked = regex.sub(replace, masked)
    if masked != text:
        assert redaction._CLUSTER.search(text) is not None


@settings(max_examples=300, deadline=None)
@given(fragment_text)
def test_keys_found_from_separators_or_from_words_are_the_same(text):
    # Few separators: keys are looked for before each; many: around each secret word.
    assert POLICY._mask_fields(text, by_separator=True) == POLICY._mask_fields(text, by_separator=False)


def _is_secret_key_in_full(policy, key):
    words = re.split(r"[_\-.\s]+", re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", key).lower())
    joined = "_".join(words)
    return bool(policy._key_words.intersection(words)) or any(p in joined for p in policy._key_phrases)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(["pass", "Word", "token", "Tokens", "max", "API", "key", "Key", "_", "-", ".",
                                 " ", "auth", "Or", "secret", "session", "Id", "x", "K", "İ"]),
                max_size=6).map("".join))
def test_the_fast_no_of_is_secret_key_agrees_with_the_full_check(key):
    fresh = RedactionPolicy()  # nothing remembered yet
    assert fresh.is_secret_key(key) == _is_secret_key_in_full(fresh, key)
    assert fresh.is_secret_key(key) == _is_secret_key_in_full(fresh, key)  # remembered


@pytest.mark.parametrize("kind", sorted({k for k, _ in DEFAULT_SECRET_PATTERNS + DEFAULT_PERSONAL_DATA_PATTERNS}
                                        | {"field"}))
def test_a_mask_is_never_masked_again(kind):
    text = f"x [REDACTED:{kind}] password=[REDACTED:{kind}] {{\"token\": \"[REDACTED:{kind}]\"}}"
    assert PERSONAL.mask_secrets(text) == text


# -- cost --------------------------------------------------------------------------------
ADVERSARIAL = [
    "token" * 10_000 + "=x", "token:" * 8_000, "a=" * 25_000, "1" * 50_000, "1 " * 25_000, "+1" + "2" * 50_000,
    "a@" * 25_000, "a" * 50_000 + "@example.com", "sk-" * 16_000, "http://" * 7_000,
    "s://" + "u" * 25_000 + ":" + "p" * 25_000, "Bearer " * 7_000, "-----BEGIN RSA PRIVATE KEY-----" + "a" * 50_000,
    "DE89 " * 10_000, 'password="' + "a" * 50_000, "%26password%3D" * 3_500, "(415) " * 8_000, "01 " * 16_000,
    "aws_secret_key " * 3_000, "eyJa.eyJb." * 5_000,
]


def test_adversarial_text_is_masked_in_linear_time():
    for text in ADVERSARIAL:
        started = time.perf_counter()
        PERSONAL.mask_secrets(text)
        assert time.perf_counter() - started < 2.0, text[:40]


# -- end to end ------------------------------------------------------------------------
def test_personal_data_is_masked_in_the_stored_events_when_enabled():
    store = aa.MemoryStore()
    writer = aa.Auditor(store, redaction=aa.RedactionPolicy(personal_data=True)).start_run("a")
    writer.log_error("mail me at a.b@example.com")
    writer.close()
    (event,) = [e for e in store.get_logs(writer.run_id) if e.event_type == "error"]
    assert event.payload["message"] == "mail me at [REDACTED:email]"


def test_personal_data_is_kept_by_default():
    store = aa.MemoryStore()
    writer = aa.Auditor(store).start_run("a")
    writer.log_error("mail me at a.b@example.com")
    writer.close()
    (event,) = [e for e in store.get_logs(writer.run_id) if e.event_type == "error"]
    assert event.payload["message"] == "mail me at a.b@example.com"


def test_free_text_secrets_are_masked_in_every_persisted_string():
    store = aa.MemoryStore()
    writer = aa.Auditor(store).start_run("a", input="connect with password=hunter2")
    writer.on_tool(aa.ToolCall("fetch", {"url": "https://x.example/?token=abc123"}),
                   "dsn postgres://bob:" + "pw9" + "@db/app")
    writer.close(aa.RunStats(output="done, client_secret: shh"))
    dump = repr([e.payload for e in store.get_logs(writer.run_id)]) + repr(store.get_run(writer.run_id))
    for secret in ("hunter2", "abc123", "pw9", "shh"):
        assert secret not in dump
    assert "postgres://bob:[REDACTED:url_password]@db/app" in dump
