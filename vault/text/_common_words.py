"""Capitalised words that are seldom names: sentence starters, greetings, weekdays, months,
products and support vocabulary (English, German, French). Strict mode skips them."""

from __future__ import annotations

from typing import Final

_COMMON_WORDS_TEXT: Final = """
    a about after again all also am an and any are as at be because been before being both
    but by can could did do does doing done each even every few for from further had has
    have having he her here hers him his how however i if in into is it its just let me
    more most my no nor not now of off on once only or other our out over own please same
    she should so some still such than that the their them then there these they this
    those though through to too under until up very was we were what when where which
    while who whom why will with would yes yet you your yours hi hello hey dear thanks
    thank regards best cheers sincerely kind warm greetings good morning afternoon evening
    night team support customer service sir madam mr mrs ms dr sorry ok okay sure great
    nobody someone something anyone everyone nothing monday tuesday wednesday thursday
    friday saturday sunday today tomorrow yesterday january february march april may june
    july august september october november december order orders invoice ticket case
    tracking refund payment card account email phone number address name password login
    app website site page error update version build browser iban bic ssn nino ip ipv4
    ipv6 id pin cvv visa mastercard amex paypal apple google android ios iphone ipad
    windows macos mac chrome firefox safari linux microsoft amazon whatsapp dhl ups fedex
    usps hmrc eur usd gbp note agent internal escalation fraud review message subject re
    fw fwd attached attachment screenshot log request response status server api webhook
    firewall office router mac bank package parcel delivery courier item items first full
    last full new old thanks hallo guten tag sehr geehrte geehrter damen herren bitte
    danke vielen dank viele grüße mit freundlichen grüßen meine mein ich sie wir die der
    das ein eine und oder nicht ist bestellung rechnung sendung sendungsnummer lieferung
    betrag konto adresse telefon rückruf app version seit vom am im bei für über noch nie
    schon leider bonjour madame monsieur merci cordialement bien vous je mon ma mes le la
    les un une et ou pas est commande facture suivi colis remboursement compte adresse
    téléphone depuis
"""
COMMON_WORDS: Final = frozenset(_COMMON_WORDS_TEXT.split())
