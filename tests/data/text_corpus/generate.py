"""Write ``support_messages.jsonl``: a labelled corpus of fake customer-support messages.

Run from the repository root (needs Faker, a test-only dependency)::

    .venv/bin/python tests/data/text_corpus/generate.py

Each line is ``{"text": ..., "spans": [{"start": s, "end": e, "class": c}, ...]}`` where
``text[s:e]`` is one inserted value of class ``c``: ``email``, ``phone``, ``card_number``,
``iban``, ``national_id`` (US SSN, UK NINO), ``ip_address`` (v4 and v6), and also ``name`` and
``address`` (for evaluating an NER recognizer; the pattern tests ignore them). Everything not
labelled is meant not to be PII of those classes: order, tracking, invoice, ticket and case
numbers, amounts, dates, times, versions, user agents, non-Luhn 16-digit references, ISBNs, hex
ids, UUIDs, MAC addresses and URLs.

What the values look like, and why:

* Values are valid as real ones are: card numbers pass Luhn (Faker makes them), IBANs pass
  mod 97 and their country format, SSNs and NINOs follow the allocation rules, phone numbers
  are in a range libphonenumber knows as assigned. An invalid "card number" is not a card.
* The corpus is what a North-American support desk receives: phone numbers of US and Canadian
  customers are written in any common national or international format; customers elsewhere
  write theirs in international format (``+44 20 7946 0958``), since a national format is
  ambiguous outside the caller's own country. SSNs are written ``123-45-6789`` or
  ``123 45 6789``; a bare nine-digit SSN is left out, as the default detector does not claim it.
* The generator is seeded and uses no clock, so a run with the same Faker version writes the
  same file byte for byte.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import random
import re
import string
import sys
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import phonenumbers
from faker import Faker
from stdnum import ean as stdnum_ean
from stdnum import iban as stdnum_iban
from stdnum import luhn as stdnum_luhn
from stdnum.us import ssn as stdnum_ssn

SEED = 20240611
N_MESSAGES = 3000
OUT = Path(__file__).with_name("support_messages.jsonl")

# locale -> share of customers
LOCALES: dict[str, int] = {
    "en_US": 34,
    "en_GB": 14,
    "en_CA": 8,
    "en_AU": 5,
    "en_IE": 3,
    "de_DE": 11,
    "fr_FR": 8,
    "es_ES": 7,
    "it_IT": 5,
    "nl_NL": 5,
}
REGION = {
    "en_US": "US",
    "en_GB": "GB",
    "en_CA": "CA",
    "en_AU": "AU",
    "en_IE": "IE",
    "de_DE": "DE",
    "fr_FR": "FR",
    "es_ES": "ES",
    "it_IT": "IT",
    "nl_NL": "NL",
}
NANP = {"US", "CA"}
IBAN_LOCALES = ("de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "en_GB", "en_IE")
# Faker makes every Maestro number 12 digits long (and some with a 0604 prefix no card has);
# real Maestro numbers are mostly 16-19 digits, so Faker's are left out. The detector's range
# is 13-19 digits.
CARD_TYPES = (
    "visa16",
    "visa16",
    "visa16",
    "mastercard",
    "mastercard",
    "amex",
    "discover",
    "diners",
    "jcb16",
    "jcb15",
    "visa13",
    "visa19",
)
NINO_FIRST = [c for c in string.ascii_uppercase if c not in "DFIQUV"]
NINO_SECOND = [c for c in string.ascii_uppercase if c not in "DFIOQUV"]
NINO_EXCLUDED = {"BG", "GB", "KN", "NK", "NT", "TN", "ZZ"}
# Dates come from this fixed range, never from the clock.
FIRST_DAY = datetime.date(2022, 1, 1)
DAYS = 3 * 365

rng = random.Random(SEED)
fakers: dict[str, Faker] = {}
for index, locale in enumerate(LOCALES):
    fake = Faker(locale)
    fake.seed_instance(SEED + index)
    fakers[locale] = fake


def pick(*options: str) -> str:
    return rng.choice(options)


def digits(n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


# -- PII values -----------------------------------------------------------------------------------


def nanp_number(region: str) -> phonenumbers.PhoneNumber:
    while True:
        area = str(rng.randint(2, 9)) + digits(2)
        exchange = str(rng.randint(2, 9)) + digits(2)
        number = phonenumbers.parse(f"+1{area}{exchange}{digits(4)}")
        if phonenumbers.is_valid_number(number) and (
            phonenumbers.region_code_for_number(number) in NANP
        ):
            return number


def foreign_number(region: str) -> phonenumbers.PhoneNumber:
    kind = rng.choice(
        (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE)
    )
    example = phonenumbers.example_number_for_type(region, kind)
    assert example is not None
    national = phonenumbers.national_significant_number(example)
    while True:
        keep = max(2, len(national) - rng.randint(4, 6))
        candidate = national[:keep] + digits(len(national) - keep)
        number = phonenumbers.parse(f"+{example.country_code}{candidate}")
        if phonenumbers.is_valid_number(number):
            return number


def phone(locale: str) -> str:
    region = REGION[locale]
    if region in NANP:
        number = nanp_number(region)
        nsn = str(number.national_number)
        a, b, c = nsn[:3], nsn[3:6], nsn[6:]
        return pick(
            f"({a}) {b}-{c}",
            f"({a}) {b}-{c}",
            f"({a}){b}-{c}",
            f"{a}-{b}-{c}",
            f"{a}-{b}-{c}",
            f"{a}.{b}.{c}",
            f"{a} {b} {c}",
            f"{a}{b}{c}",
            f"+1 {a}-{b}-{c}",
            f"+1 ({a}) {b}-{c}",
            f"+1 {a} {b} {c}",
            f"+1{a}{b}{c}",
            f"1-{a}-{b}-{c}",
            f"1 ({a}) {b}-{c}",
        )
    number = foreign_number(region)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    variants = [international, international, international, e164, international.replace(" ", "-")]
    if region == "GB":
        national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
        variants.append(f"+44 ({national[0]}){national[1:]}")  # +44 (0)20 7946 0958
    return rng.choice(variants)


def group(number: str, sizes: list[int], sep: str) -> str:
    parts, at = [], 0
    for size in sizes:
        parts.append(number[at : at + size])
        at += size
    if at < len(number):
        parts.append(number[at:])
    return sep.join(p for p in parts if p)


def card() -> str:
    number = fakers["en_US"].credit_card_number(card_type=rng.choice(CARD_TYPES))
    assert stdnum_luhn.is_valid(number)
    style = rng.random()
    if style < 0.35:
        return number
    sep = " " if style < 0.8 else "-"
    if len(number) == 15:
        return group(number, [4, 6, 5], sep)
    if len(number) == 14:
        return group(number, [4, 6, 4], sep)
    return group(number, [4, 4, 4, 4, 4], sep)


def iban() -> str:
    while True:
        value = fakers[rng.choice(IBAN_LOCALES)].iban()
        if stdnum_iban.is_valid(value):
            break
    return value if rng.random() < 0.4 else stdnum_iban.format(value)


def ssn() -> str:
    while True:
        value = fakers["en_US"].ssn()
        if stdnum_ssn.is_valid(value):
            break
    return value if rng.random() < 0.85 else value.replace("-", " ")


def nino() -> str:
    while True:
        prefix = rng.choice(NINO_FIRST) + rng.choice(NINO_SECOND)
        if prefix not in NINO_EXCLUDED:
            break
    body, suffix = digits(6), rng.choice("ABCD")
    return pick(
        f"{prefix}{body}{suffix}",
        f"{prefix} {body[:2]} {body[2:4]} {body[4:]} {suffix}",
        f"{prefix} {body} {suffix}",
    )


def ipv4() -> str:
    fake = fakers["en_US"]
    return fake.ipv4_public() if rng.random() < 0.7 else fake.ipv4_private()


def ipv6() -> str:
    value = fakers["en_US"].ipv6()
    style = rng.random()
    if style < 0.15:
        return (
            "2001:db8:"
            + ":".join(f"{rng.randrange(65536):x}" for _ in range(2))
            + "::"
            + (f"{rng.randrange(1, 65536):x}")
        )
    if style < 0.25:
        return "fe80::" + ":".join(f"{rng.randrange(65536):x}" for _ in range(4))
    if style < 0.35:
        return ipaddress.IPv6Address(value).exploded
    if style < 0.4:
        return value.upper()
    return value


def email(locale: str) -> str:
    fake = fakers[locale]
    style = rng.random()
    if style < 0.35:
        value = fake.email()
    elif style < 0.6:
        value = fake.free_email()
    elif style < 0.8:
        value = fake.company_email()
    else:
        first = fakers["en_US"].first_name().lower()
        last = fakers["en_US"].last_name().lower()
        domain = fake.free_email_domain()
        value = pick(
            f"{first}.{last}@{domain}",
            f"{first}_{last}{rng.randint(1, 99)}@{domain}",
            f"{first[0]}{last}+{pick('orders', 'shop', 'news', 'support')}@{domain}",
            f"{first}-{last}@{domain}",
        )
    if rng.random() < 0.08:
        value = value[0].upper() + value[1:]
    return value


def name(locale: str) -> str:
    return fakers[locale].name()


def first_name(locale: str) -> str:
    return fakers[locale].first_name()


def address(locale: str) -> str:
    return fakers[locale].address().replace("\n", ", ")


def address_block(locale: str) -> str:
    return fakers[locale].address()


# -- distractors (not labelled) -------------------------------------------------------------------


def order() -> str:
    return pick(
        f"#{rng.randint(1000, 99999)}",
        f"#{digits(3)}-{digits(4)}",
        f"ORD-{rng.randint(2019, 2025)}-{digits(6)}",
        f"{digits(3)}-{digits(7)}-{digits(7)}",
        f"W{digits(9)}",
        f"{rng.randint(10000000, 99999999)}",
        f"{rng.randint(1000000000, 9999999999)}",
        f"SO{digits(6)}",
        f"#{rng.randint(1000000000, 9999999999)}",
    )


def tracking() -> str:
    usps = "94" + digits(20)
    fedex = digits(12)
    return pick(
        "1Z"
        + "".join(rng.choice(string.ascii_uppercase + string.digits) for _ in range(6))
        + digits(10),
        usps,
        group(usps, [4, 4, 4, 4, 4], " "),
        fedex,
        group(fedex, [4, 4], " "),
        digits(15),
        "JD01" + digits(16),
        f"{rng.choice(string.ascii_uppercase)}{rng.choice(string.ascii_uppercase)}{digits(9)}GB",
        digits(10),
    )


def amount() -> str:
    value = rng.choice((rng.randint(5, 99), rng.randint(100, 4999))) + rng.randint(0, 99) / 100
    return pick(
        f"${value:,.2f}",
        f"${value:,.2f}",
        f"£{value:,.2f}",
        f"{value:,.2f} EUR".replace(",", "X").replace(".", ",").replace("X", "."),
        f"€{value:.2f}".replace(".", ","),
        f"USD {value:.2f}",
        f"${int(value)}",
    )


def date() -> str:
    d = FIRST_DAY + datetime.timedelta(days=rng.randrange(DAYS))
    return pick(
        d.strftime("%m/%d/%Y"),
        d.strftime("%d/%m/%Y"),
        d.isoformat(),
        d.strftime("%B %-d, %Y"),
        d.strftime("%d.%m.%Y"),
        d.strftime("%-m/%-d"),
        d.strftime("%d %b %Y"),
    )


def time_of_day() -> str:
    h, m, s = rng.randint(0, 23), rng.randint(0, 59), rng.randint(0, 59)
    return pick(
        f"{h:02d}:{m:02d}",
        f"{(h % 12) or 12}:{m:02d} {'PM' if h >= 12 else 'AM'}",
        f"{h:02d}:{m:02d}:{s:02d}",
        f"{(h % 12) or 12}{'pm' if h >= 12 else 'am'}",
    )


def timestamp() -> str:
    d = datetime.datetime.combine(
        FIRST_DAY, datetime.time(), tzinfo=datetime.UTC
    ) + datetime.timedelta(seconds=rng.randrange(DAYS * 86400))
    return pick(
        d.strftime("%Y-%m-%dT%H:%M:%SZ"),
        d.strftime("%Y-%m-%d %H:%M:%S"),
        d.strftime("%Y-%m-%dT%H:%M:%S.") + digits(3) + "Z",
        str(int(d.timestamp())),
    )


def version() -> str:
    return pick(
        f"v{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}",
        f"{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 20)}",
        f"{rng.randint(1, 5)}.{rng.randint(0, 9)}",
        f"{rng.randint(2019, 2025)}.{rng.randint(1, 12):02d}.{rng.randint(1, 9)}",
        f"{rng.randint(1, 4)}.{rng.randint(0, 9)}.{rng.randint(0, 9)}-rc{rng.randint(1, 5)}",
        f"{rng.randint(1, 4)}.{rng.randint(0, 9)}.{rng.randint(0, 9)} (build {digits(4)})",
    )


def os_version() -> str:
    return pick(
        f"iOS {rng.randint(14, 18)}.{rng.randint(0, 6)}.{rng.randint(0, 3)}",
        f"Android {rng.randint(9, 15)}",
        f"Windows 11 (10.0.{rng.randint(19041, 26100)}.{rng.randint(100, 4000)})",
        f"macOS {rng.randint(11, 15)}.{rng.randint(0, 7)}",
        f"Chrome {rng.randint(100, 131)}.0.{rng.randint(4000, 6800)}.{rng.randint(10, 200)}",
        f"Firefox {rng.randint(100, 133)}.0.{rng.randint(1, 3)}",
    )


def non_luhn_16() -> str:
    while True:
        number = str(rng.randint(1, 9)) + digits(15)
        if not stdnum_luhn.is_valid(number):
            break
    return number if rng.random() < 0.5 else group(number, [4, 4, 4, 4], rng.choice(" -"))


def isbn() -> str:
    while True:
        number = rng.choice(("978", "979")) + digits(9)
        number += stdnum_ean.calc_check_digit(number)
        if stdnum_ean.is_valid(number):
            break
    if rng.random() < 0.5:
        return number
    return f"{number[:3]}-{number[3]}-{number[4:7]}-{number[7:12]}-{number[12]}"


def hex_id() -> str:
    fake = fakers["en_US"]
    return pick(
        fake.uuid4(),
        fake.sha1()[: rng.choice((7, 12, 40))],
        f"0x{rng.randrange(16**8):08X}",
        fake.hexify("^" * 24),
        fake.md5(),
    )


def url() -> str:
    fake = fakers["en_US"]
    return pick(
        fake.url(),
        fake.uri(),
        f"https://{fake.domain_name()}/account/orders?id={digits(6)}&utm_source=email",
        f"https://{fake.domain_name()}/help/articles/{digits(9)}-{fake.slug()}",
        f"http://status.{fake.domain_name()}/incidents/{fake.hexify('^' * 12)}",
        f"https://www.{fake.domain_name()}/track?n={digits(12)}",
    )


def mac() -> str:
    value = fakers["en_US"].mac_address()
    return value.upper() if rng.random() < 0.5 else value.replace(":", "-")


def sku() -> str:
    return pick(
        f"{digits(3)}-{digits(4)}-{digits(2)}", f"SKU{digits(7)}", f"{digits(6)}-{digits(2)}"
    )


def invoice() -> str:
    return pick(f"INV-{rng.randint(2019, 2025)}-{digits(5)}", f"{digits(8)}", f"#{digits(6)}")


def ticket() -> str:
    return pick(f"#{digits(6)}", f"CS-{digits(7)}", f"{digits(8)}", f"T{digits(5)}")


def last4() -> str:
    return digits(4)


def expiry() -> str:
    return f"{rng.randint(1, 12):02d}/{rng.randint(25, 31)}"


def cvv() -> str:
    return digits(3)


def port() -> str:
    return str(rng.choice((22, 80, 443, 3389, 8080, 8443, rng.randint(1024, 65535))))


def bic(locale: str) -> str:
    return fakers[locale if locale in IBAN_LOCALES else "de_DE"].swift()


def user_agent() -> str:
    chrome = f"{rng.randint(100, 131)}.0.{rng.randint(4000, 6800)}.{rng.randint(10, 200)}"
    webkit = pick("537.36", "605.1.15")
    return pick(
        f"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/{webkit} (KHTML, like Gecko) "
        f"Chrome/{chrome} Safari/{webkit}",
        f"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/605.1.15 (KHTML, like Gecko) "
        f"Version/{rng.randint(14, 18)}.{rng.randint(0, 6)} Safari/605.1.15",
        f"Mozilla/5.0 (iPhone; CPU iPhone OS {rng.randint(14, 18)}_{rng.randint(0, 6)} like Mac "
        f"OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148",
        f"Mozilla/5.0 (X11; Linux x86_64; rv:{rng.randint(100, 133)}.0) Gecko/20100101 "
        f"Firefox/{rng.randint(100, 133)}.0",
        f"Mozilla/5.0 (Windows NT 6.1; rv:1.9.{rng.randint(0, 2)}.{rng.randint(1, 28)}) "
        f"Gecko/2010{rng.randint(1, 12):02d}{rng.randint(1, 28):02d} Firefox/3.6.{rng.randint(1, 28)}",
        f"Mozilla/5.0 (Linux; Android {rng.randint(9, 15)}; SM-G{digits(3)}B) "
        f"AppleWebKit/537.36 (KHTML, like Gecko) Chrome/{chrome} Mobile Safari/537.36",
        f"okhttp/4.{rng.randint(0, 12)}.{rng.randint(0, 9)}",
        f"AcmeShop/{rng.randint(1, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 9)}.{rng.randint(0, 250)} "
        f"(iPhone; iOS {rng.randint(14, 18)}.{rng.randint(0, 6)})",
    )


def quantity() -> str:
    return str(rng.randint(1, 12))


def days() -> str:
    return str(rng.randint(2, 30))


def postcode(locale: str) -> str:
    return fakers[locale].postcode()


def company(locale: str) -> str:
    return fakers[locale].company()


# -- hard cases (issue 10): local phone formats, format variants, names, addresses, birth dates ----

LOCAL_PHONE_REGIONS = ("GB", "DE", "FR")
MONTHS = {
    "en": ("January February March April May June July August September October November December"),
    "de": "Januar Februar März April Mai Juni Juli August September Oktober November Dezember",
    "fr": ("janvier février mars avril mai juin juillet août septembre octobre novembre décembre"),
}
EN_STREETS = ("Street", "St", "Road", "Avenue", "Ave", "Lane", "Drive", "Court", "Place", "Way")
DE_STREETS = ("straße", "str.", "weg", "platz", "allee", "gasse", "ring")
FR_STREETS = ("rue", "avenue", "boulevard", "place", "chemin", "allée")


def phone_local(locale: str) -> str:
    """A number written the way its owner writes it at home, whatever the desk's region."""
    region = rng.choice((*LOCAL_PHONE_REGIONS, "US"))
    if region == "US":
        number = nanp_number(region)
        nsn = str(number.national_number)
        a, b, c = nsn[:3], nsn[3:6], nsn[6:]
        if rng.random() < 0.3:  # possible, not assigned: "+1 (275) 182-3042"
            a, b = (
                f"{rng.randint(2, 9)}{rng.choice('0123456789')}{rng.randint(0, 9)}",
                f"1{digits(2)}",
            )
            return f"+1 ({a}) {b}-{c}"
        return f"({a}) {b}-{c}"
    number = foreign_number(region)
    national = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.NATIONAL)
    international = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.INTERNATIONAL)
    return pick(national, national, "00" + international[1:])


def card_variant(locale: str) -> str:
    number = fakers["en_US"].credit_card_number(card_type=rng.choice(("visa16", "mastercard")))
    groups = [number[i : i + 4] for i in range(0, len(number), 4)]
    style = rng.random()
    if style < 0.4:
        return ".".join(groups)
    cut = rng.randint(1, len(groups) - 1)
    sep = rng.choice((" ", "-"))
    tail = "" if sep == " " else "-"
    return sep.join(groups[:cut]) + tail + "\n" + sep.join(groups[cut:])


def iban_lower(locale: str) -> str:
    value = iban()
    return value.lower()


def nino_lower(locale: str) -> str:
    return nino().lower()


def ssn_bare(locale: str) -> str:
    while True:
        value = fakers["en_US"].ssn().replace("-", "")
        if stdnum_ssn.is_valid(value):
            return value


def dob(locale: str) -> str:
    day = datetime.date(1940, 1, 1) + datetime.timedelta(days=rng.randrange(65 * 365))
    language = {"de_DE": "de", "fr_FR": "fr"}.get(locale, "en")
    month = MONTHS[language].split(" ")[day.month - 1]
    if language == "de":
        return pick(f"{day.day}. {month} {day.year}", day.strftime("%d.%m.%Y"))
    if language == "fr":
        first = "1er" if day.day == 1 else str(day.day)
        return pick(f"{first} {month} {day.year}", day.strftime("%d/%m/%Y"))
    return pick(
        f"{month} {day.day}, {day.year}",
        f"{day.day} {month} {day.year}",
        day.strftime("%m/%d/%Y"),
        day.strftime("%d/%m/%Y"),
        day.isoformat(),
    )


def last_name(locale: str) -> str:
    return fakers[locale].last_name()


def street(locale: str) -> str:
    """A street address as people type it on one line: number, street, postcode, town."""
    fake = fakers[locale]
    last = fakers[locale].last_name().split(" ")[0].split("-")[0]
    if locale == "de_DE":
        return (
            f"{last}{rng.choice(DE_STREETS)} {rng.randint(1, 120)}, {fake.postcode()} {fake.city()}"
        )
    if locale == "fr_FR":
        kind = rng.choice(FR_STREETS)
        return f"{rng.randint(1, 90)}{pick(',', '')} {kind} {pick('de ', '')}{last}, {fake.postcode()} {fake.city()}"
    if locale == "en_GB":
        return f"{rng.randint(1, 250)} {last} {rng.choice(EN_STREETS)}, {fake.city()} {fake.postcode()}"
    us = fakers["en_US"]
    return (
        f"{rng.randint(1, 9999)} {last} {rng.choice(EN_STREETS)}, {us.city()}, "
        f"{us.state_abbr(include_territories=False)} {us.zipcode()}"
    )


# slot -> (label or None, value maker taking the message's locale)
SLOTS: dict[str, tuple[str | None, Callable[[str], str]]] = {
    "email": ("email", email),
    "phone": ("phone", phone),
    "card": ("card_number", lambda _: card()),
    "iban": ("iban", lambda _: iban()),
    "ssn": ("national_id", lambda _: ssn()),
    "nino": ("national_id", lambda _: nino()),
    "ipv4": ("ip_address", lambda _: ipv4()),
    "ipv6": ("ip_address", lambda _: ipv6()),
    "name": ("name", name),
    "first": ("name", first_name),
    "address": ("address", address),
    "address_block": ("address", address_block),
    "phone_local": ("phone", phone_local),
    "card_variant": ("card_number", card_variant),
    "iban_lower": ("iban", iban_lower),
    "nino_lower": ("national_id", nino_lower),
    "ssn_bare": ("national_id", ssn_bare),
    "dob": ("date_of_birth", dob),
    "last": ("name", last_name),
    "street": ("address", street),
    "order": (None, lambda _: order()),
    "tracking": (None, lambda _: tracking()),
    "amount": (None, lambda _: amount()),
    "date": (None, lambda _: date()),
    "time": (None, lambda _: time_of_day()),
    "ts": (None, lambda _: timestamp()),
    "version": (None, lambda _: version()),
    "os": (None, lambda _: os_version()),
    "ref16": (None, lambda _: non_luhn_16()),
    "isbn": (None, lambda _: isbn()),
    "hex": (None, lambda _: hex_id()),
    "url": (None, lambda _: url()),
    "mac": (None, lambda _: mac()),
    "sku": (None, lambda _: sku()),
    "invoice": (None, lambda _: invoice()),
    "ticket": (None, lambda _: ticket()),
    "last4": (None, lambda _: last4()),
    "expiry": (None, lambda _: expiry()),
    "cvv": (None, lambda _: cvv()),
    "port": (None, lambda _: port()),
    "bic": (None, bic),
    "ua": (None, lambda _: user_agent()),
    "qty": (None, lambda _: quantity()),
    "days": (None, lambda _: days()),
    "postcode": (None, postcode),
    "company": (None, company),
}

# -- templates ------------------------------------------------------------------------------------

GREETINGS = [
    "Hi,",
    "Hello,",
    "Hi there,",
    "Hello team,",
    "Dear Support,",
    "Good morning,",
    "Good afternoon,",
    "hey",
    "hi",
    "To whom it may concern,",
    "Hi {first},",
    "",
    "",
]

PII_SENTENCES: dict[str, list[str]] = {
    "email": [
        "You can reach me at {email}.",
        "Please send the invoice to {email} instead of my work address.",
        "My email is {email}",
        "I changed my email to {email} last week but you still write to the old one ({email}).",
        "Login email: {email}",
        "Reply to {email}, thanks",
        "cc'ing my partner ({email}) on this.",
        "is {email} still the address on file?",
        "The account is registered under {email}.",
        "I never signed up with {email}, someone else did!",
        "please use {email} from now on",
        "Can you unsubscribe {email} from the newsletter?",
    ],
    "phone": [
        "Call me back on {phone} after 5pm.",
        "My number is {phone}.",
        "You can text {phone} if that's easier.",
        "Phone: {phone}",
        "I tried calling from {phone} but got disconnected twice.",
        "Please update my mobile to {phone}; the old one ({phone}) is disconnected.",
        "best number to reach me is {phone} or my husband at {phone}",
        "The courier should call {phone} when they arrive.",
        "I'm available at {phone} between {time} and {time}.",
        "you guys keep calling {phone} but that isn't my number anymore",
        "Mobile: {phone} (WhatsApp works too)",
    ],
    "card": [
        "The charge was on my card {card}.",
        "I paid with card number {card}, exp {expiry}.",
        "card {card} keeps getting declined",
        "Please refund to the card I used (full number {card}).",
        "My Visa is {card} and the CVV is {cvv}.",
        "Card: {card}\nExpiry: {expiry}",
        "I see two charges of {amount} on {card}.",
        "Can you remove the card {card} from my account? It was stolen.",
        "I added {card} as a new payment method but it shows an error.",
        "The card ending in {last4} was replaced, the new one is {card}, exp {expiry}.",
    ],
    "iban": [
        "Please refund to my IBAN {iban}.",
        "Bank details: {name}, IBAN {iban}, BIC {bic}.",
        "IBAN: {iban}",
        "The direct debit from {iban} failed on {date}.",
        "Can you pay the refund into {iban}?",
        "I changed banks, new IBAN is {iban} (BIC {bic}).",
        "Account holder {name}\nIBAN {iban}",
    ],
    "ssn": [
        "My SSN is {ssn}.",
        "For the credit check: SSN {ssn}, date of birth {dob}.",
        "Social security number: {ssn}",
        "They asked for my social ({ssn}) on the phone, is that legit?",
        "The form wants an SSN, mine is {ssn}.",
        "SSN {ssn} is on the tax form you sent, please correct the name.",
    ],
    "nino": [
        "My National Insurance number is {nino}.",
        "NI number: {nino}",
        "NINO {nino}",
        "HMRC asked me for my NI no. ({nino}) before they could help.",
        "My payslip shows {nino}, is that right?",
    ],
    "ipv4": [
        "I'm connecting from {ipv4} and it says access denied.",
        "My IP address is {ipv4}",
        "The login came from {ipv4}, which isn't me!",
        "Please whitelist {ipv4} for our office.",
        "ping to {ipv4} times out since {time}",
        "Our server at {ipv4}:{port} can't reach your API.",
        "Your security email said sign-in from {ipv4} on {date}.",
    ],
    "ipv6": [
        "Our office IPv6 is {ipv6}.",
        "Failed login from {ipv6} at {time}.",
        "The webhook comes from [{ipv6}]:{port} and gets a 403.",
        "I see {ipv6} in the login history, not mine.",
        "Please allow {ipv6} in the firewall rule.",
    ],
    "log": [
        "Here's the log:\n{ts} WARN auth failed user={email} src={ipv4}\n{ts} WARN auth failed "
        "user={email} src={ipv4}",
        "{ts} ERROR request_id={hex} client={ipv6} status=403",
        '{ts} INFO session start ip={ipv4} ua="{ua}"',
        "Error from the app:\n[{ts}] POST /v2/checkout 502 from {ipv4} (request {hex})",
        "{ts} DEBUG webhook delivered to [{ipv6}]:{port} in 231ms",
    ],
    "note": [
        "Agent note: caller verified with SSN {ssn} and callback number {phone}.",
        "Internal: customer {name} ({email}) disputes charge of {amount} on {date}; card {card}.",
        "Note: customer provided NI number {nino} for verification, callback {phone}.",
        "Escalation: refund {amount} to IBAN {iban}, confirmed by phone {phone}.",
        "Fraud review: sign-in from {ipv4} and {ipv6}, customer {email} says it wasn't them.",
    ],
    "local_phone": [
        "Call me on {phone_local}, I'm abroad this month.",
        "My number is {phone_local}.",
        "Phone: {phone_local}",
        "You can reach me at {phone_local} after {time}.",
    ],
    "variant": [
        "Card number {card_variant}, exp {expiry}.",
        "The card is {card_variant}",
        "refund to iban {iban_lower} please",
        "my ni number is {nino_lower}",
        "SSN: {ssn_bare}",
        "For the check: SSN {ssn_bare}.",
    ],
    "person": [
        "My name is {name} and I ordered on {date}.",
        "I am {name}, the account holder.",
        "This is {name}, I called earlier about {order}.",
        "Please ask for Mr {last} at reception.",
        "Mrs {last} will pick it up.",
        "Dr {last} is my GP and needs the receipt.",
    ],
    "birth": [
        "My date of birth is {dob}.",
        "DOB: {dob}",
        "I was born on {dob}, if you need it for verification.",
        "Date of birth {dob}, postcode {postcode}.",
    ],
    "home": [
        "I live at {street}.",
        "Please ship it to {street} instead.",
        "My address is {street}.",
        "My new address: {street}",
        "The courier left it at {street}, which is not my house.",
    ],
    "form": [
        "Name: {name}\nEmail: {email}\nPhone: {phone}\nOrder number: {order}\nMessage:",
        "Full name: {name}\nAddress: {address}\nTelephone: {phone}\nEmail address: {email}",
        "First name: {first}\nEmail: {email}\nIP: {ipv4}\nBrowser: {ua}",
    ],
}

DISTRACTOR_SENTENCES = [
    "My order {order} still hasn't arrived.",
    "Order {order} was placed on {date} at {time}.",
    "The tracking number {tracking} hasn't updated since {date}.",
    "Tracking says delivered ({tracking}) but nothing is here.",
    "I was charged {amount} twice.",
    "Invoice {invoice} shows {amount} but the quote was {amount}.",
    "The app (version {version}) crashes when I open settings.",
    "I'm on {os} if that helps.",
    "Transaction reference {ref16}.",
    "The bank says the reference was {ref16}, dated {date}.",
    "Error code {hex} appeared at {time}.",
    "Request ID: {hex}",
    "Screenshot: {url}",
    "Your status page ({url}) shows nothing wrong.",
    "Ticket {ticket} is still open after {days} days.",
    "I bought {qty} items (SKU {sku}) for {amount}.",
    "The package was {days} days late.",
    "Case number {ticket}, please escalate.",
    "My router's MAC is {mac} if you need it.",
    "The book (ISBN {isbn}) arrived damaged.",
    "Delivery window was {time}-{time} on {date}.",
    "Firmware {version} fixed it for a day.",
    "I've been a customer since {date}.",
    "Went to {url} and got a 504.",
    "It worked fine until {date}.",
    "The promo code didn't apply, the total was {amount} instead of {amount}.",
    "my order number is {order} and it was supposed to come on {date}",
    "The parcel ({tracking}) is stuck in customs.",
    "Order {order}, {qty} items, {amount}.",
    "Membership no. {ref16}",
    "The bank statement line says {ref16}, what is that?",
    "Your email had the code {ref16} in it, do I need it?",
    "I typed {ref16} into the gift card box and it says invalid.",
    "Something called {ref16} shows up next to the charge.",
    "Your chatbot gave me ticket {ticket} and then disconnected.",
    "Update {version} on {os} broke the login.",
    "Order no. {order} shipped at {ts}.",
    "Tracking ID {tracking}, build {version}, logged {ts}.",
    "Build {version} was released on {date} at {time}.",
    "Order {order} ({qty} items) left the warehouse at {ts}.",
]

FILLER_SENTENCES = [
    "I've been waiting for over a week now.",
    "This is the third time I'm writing about this.",
    "Can someone please look into it?",
    "I'm really frustrated with the service lately.",
    "Thanks for the quick help last time.",
    "Please let me know what you need from me.",
    "I'd like a refund, not store credit.",
    "Nobody answered the phone this morning.",
    "Let me know if you need anything else.",
    "Sorry for the long message.",
    "It says my account is locked.",
    "I can't log in since the last update.",
    "Is there a way to speed this up?",
    "The website keeps logging me out.",
]

CLOSINGS = [
    "Thanks,\n{name}",
    "Best regards,\n{name}\n{address_block}",
    "Kind regards,\n{name}\n{phone}",
    "Cheers, {first}",
    "thx",
    "Regards,\n{name} | {company} | {phone} | {email}",
    "Thank you,\n{name}",
    "-- {first}",
    "",
    "",
]

LOCAL_TEMPLATES: dict[str, dict[str, list[str]]] = {
    "de_DE": {
        "greeting": ["Hallo,", "Sehr geehrte Damen und Herren,", "Guten Tag,"],
        "pii": [
            "Meine IBAN lautet {iban}.",
            "Sie erreichen mich unter {phone}.",
            "Meine E-Mail-Adresse ist {email}.",
            "Bitte erstatten Sie den Betrag auf {iban} (BIC {bic}).",
            "Rückruf bitte unter {phone} oder per Mail an {email}.",
            "Ich heiße {name} und bin seit {date} Kundin.",
            "Ich wohne in der {street}.",
            "Meine Adresse: {street}",
            "Ich bin am {dob} geboren.",
            "Geburtsdatum: {dob}",
            "Sie erreichen mich unter {phone_local}.",
            "Bitte geben Sie das Paket bei Frau {last} ab.",
        ],
        "other": [
            "Bestellung {order} vom {date} ist noch nicht angekommen.",
            "Mir wurden {amount} doppelt abgebucht.",
            "Die Sendungsnummer {tracking} wird seit dem {date} nicht aktualisiert.",
            "Die App (Version {version}) stürzt ständig ab.",
        ],
        "closing": ["Mit freundlichen Grüßen\n{name}\n{address_block}", "Viele Grüße\n{first}"],
    },
    "fr_FR": {
        "greeting": ["Bonjour,", "Madame, Monsieur,"],
        "pii": [
            "Mon IBAN est {iban}.",
            "Vous pouvez me joindre au {phone}.",
            "Mon adresse e-mail : {email}",
            "Merci de rembourser sur le compte {iban}.",
            "Je m'appelle {name}, client depuis {date}.",
            "J'habite au {street}.",
            "Adresse : {street}",
            "Née le {dob}.",
            "Date de naissance : {dob}",
            "Mon numéro : {phone_local}",
            "Merci de remettre le colis à Madame {last}.",
        ],
        "other": [
            "La commande {order} du {date} n'est toujours pas arrivée.",
            "J'ai été débité deux fois de {amount}.",
            "Le suivi {tracking} n'a pas bougé depuis le {date}.",
        ],
        "closing": [
            "Cordialement,\n{name}",
            "Bien à vous,\n{name}\n{address_block}",
            "Cordialement,\n{name}\n{street}",
        ],
    },
    "es_ES": {
        "greeting": ["Hola,", "Buenos días,"],
        "pii": [
            "Mi IBAN es {iban}.",
            "Pueden llamarme al {phone}.",
            "Mi correo es {email}.",
            "Por favor, devuelvan el importe a la cuenta {iban}.",
        ],
        "other": [
            "El pedido {order} del {date} no ha llegado.",
            "Me han cobrado {amount} dos veces.",
            "El número de seguimiento {tracking} no se actualiza.",
        ],
        "closing": ["Un saludo,\n{name}", "Gracias,\n{first}"],
    },
    "it_IT": {
        "greeting": ["Buongiorno,", "Salve,"],
        "pii": [
            "Il mio IBAN è {iban}.",
            "Potete chiamarmi al {phone}.",
            "La mia email è {email}.",
        ],
        "other": [
            "L'ordine {order} del {date} non è ancora arrivato.",
            "Mi avete addebitato {amount} due volte.",
        ],
        "closing": ["Cordiali saluti,\n{name}", "Grazie,\n{first}"],
    },
    "nl_NL": {
        "greeting": ["Hallo,", "Beste klantenservice,", "Goedemiddag,"],
        "pii": [
            "Mijn IBAN is {iban}.",
            "U kunt mij bereiken op {phone}.",
            "Mijn e-mailadres is {email}.",
        ],
        "other": [
            "Bestelling {order} van {date} is nog niet aangekomen.",
            "Er is twee keer {amount} afgeschreven.",
        ],
        "closing": ["Met vriendelijke groet,\n{name}", "Groeten,\n{first}"],
    },
}

# PII sentence kind -> weight; chosen so that every class appears a few hundred times.
PII_WEIGHTS: dict[str, int] = {
    "email": 14,
    "phone": 14,
    "card": 13,
    "iban": 10,
    "ssn": 8,
    "nino": 6,
    "ipv4": 8,
    "ipv6": 7,
    "log": 5,
    "note": 6,
    "form": 4,
    "local_phone": 5,
    "variant": 5,
    "person": 5,
    "birth": 4,
    "home": 5,
}

SLOT_RE = re.compile(r"\{(\w+)\}")


class Message:
    """Accumulates text and the exact spans of the labelled values put into it."""

    def __init__(self, locale: str) -> None:
        self.locale = locale
        self.parts: list[str] = []
        self.length = 0
        self.spans: list[dict[str, object]] = []

    def add(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def fill(self, template: str) -> None:
        at = 0
        for slot in SLOT_RE.finditer(template):
            self.add(template[at : slot.start()])
            label, make = SLOTS[slot.group(1)]
            value = make(self.locale)
            if label is not None:
                self.spans.append(
                    {"start": self.length, "end": self.length + len(value), "class": label}
                )
            self.add(value)
            at = slot.end()
        self.add(template[at:])

    def text(self) -> str:
        return "".join(self.parts)


def english_message(locale: str) -> Message:
    message = Message(locale)
    chat = rng.random() < 0.3  # short, informal, one line
    pieces: list[str] = []
    if not chat:
        pieces.append(rng.choice(GREETINGS))
    body: list[str] = []
    kinds = list(PII_WEIGHTS)
    weights = list(PII_WEIGHTS.values())
    for kind in rng.choices(kinds, weights, k=rng.choice((1, 1, 2, 2, 3))):
        if kind == "nino" and locale not in ("en_GB", "en_IE") and rng.random() < 0.7:
            kind = "ssn" if locale == "en_US" else "email"
        if kind == "ssn" and locale != "en_US" and rng.random() < 0.7:
            kind = "nino" if locale == "en_GB" else "phone"
        body.append(rng.choice(PII_SENTENCES[kind]))
    for _ in range(rng.choice((0, 1, 1, 2, 2, 3))):
        body.append(rng.choice(DISTRACTOR_SENTENCES))
    for _ in range(rng.choice((0, 0, 1, 1, 2))):
        body.append(rng.choice(FILLER_SENTENCES))
    rng.shuffle(body)
    if chat:
        line = " ".join(body)
        if rng.random() < 0.5:
            line = line.lower()
        pieces.append(line)
    else:
        pieces.append(" ".join(body))
        pieces.append(rng.choice(CLOSINGS))
    # slot names are lower case, so a lower-cased chat line keeps them
    message.fill("\n\n".join(p for p in pieces if p))
    return message


def local_message(locale: str) -> Message:
    message = Message(locale)
    local = LOCAL_TEMPLATES[locale]
    body = [rng.choice(local["pii"]) for _ in range(rng.choice((1, 1, 2)))]
    body += [rng.choice(local["other"]) for _ in range(rng.choice((0, 1, 1, 2)))]
    rng.shuffle(body)
    template = "\n\n".join(
        [rng.choice(local["greeting"]), " ".join(body), rng.choice(local["closing"])]
    )
    message.fill(template)
    return message


def generate() -> list[dict[str, object]]:
    locales = list(LOCALES)
    weights = list(LOCALES.values())
    messages: list[dict[str, object]] = []
    for _ in range(N_MESSAGES):
        locale = rng.choices(locales, weights)[0]
        if locale in LOCAL_TEMPLATES and rng.random() < 0.35:
            message = local_message(locale)
        else:
            message = english_message(locale)
        messages.append({"text": message.text(), "spans": message.spans})
    return messages


def dumps(messages: list[dict[str, object]]) -> str:
    return "".join(
        json.dumps(m, ensure_ascii=False, separators=(",", ":")) + "\n" for m in messages
    )


def main() -> int:
    messages = generate()
    OUT.write_text(dumps(messages), encoding="utf-8")
    counts: Counter[str] = Counter()
    for line in dumps(messages).splitlines():
        for span in json.loads(line)["spans"]:
            counts[span["class"]] += 1
    print(f"wrote {len(messages)} messages, {OUT.stat().st_size} bytes, to {OUT}")
    for label, count in sorted(counts.items()):
        print(f"  {label:12} {count}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
