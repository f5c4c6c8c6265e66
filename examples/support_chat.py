"""Redact a support chat before an LLM sees it, and re-identify the answer for a human.

Runs offline against the vault of ``make dev`` (it reads ``.cvault/dev.json`` for the address
and the sample roles' API keys); the LLM is a stand-in function, so no model or network is
needed. The flow:

1. the support tool (role ``ai-pipeline``: tokens only) redacts each customer message with
   ``TokenizeText`` into tokens of the conversation's scope: the same value keeps the same
   token across turns, so the model can refer back to it;
2. the stand-in LLM answers using only tokens (it also invents a token and mangles another,
   as models do);
3. the human support agent (role ``support-agent``) re-identifies the answer with
   ``RevealText``: each token comes back as the policy gives that role for the purpose
   ``customer-support`` (e.g. the email masked), unknown and altered tokens are reported and
   left as they are, and every reveal is audited;
4. the agent lets the LLM agent re-identify this conversation's email for one tool call with a
   short-lived grant (``IssueGrant``), audited naming both.

    make dev                                    # in one terminal
    .venv/bin/python examples/support_chat.py   # in another
"""

from __future__ import annotations

import argparse
import json
import re
import uuid
from pathlib import Path

from vault.client import VaultClient

PURPOSE = "customer-support"

CHAT = [
    "Hi, this is Ada. I can't log in. My email is ada.lovelace@example.com.",
    "The card ending 1111 was charged twice: 4111 1111 1111 1111. Call me on +44 20 7946 0958.",
    "Sorry, I meant my other address: ada.lovelace@example.com is the right one.",
]


def stand_in_llm(prompt: list[str]) -> str:
    """A stand-in for the model: echoes the tokens it was given, as an assistant would, plus an
    invented token and a token cut short (both must be reported, not guessed at)."""
    tokens = re.findall(r"tok_[a-z_]+_[0-9A-Za-z]{22}", "\n".join(prompt))
    email, card, phone = tokens[0], tokens[1], tokens[2]
    return (
        f"I have refunded the duplicate charge on card {card}. A confirmation goes to {email}, "
        f"and we will call {phone} if needed. (Reference: tok_email_{'X' * 22}, see "
        f"{email[:-4]}.)"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--state", default=".cvault", help="make dev's state directory")
    parser.add_argument("--tenant", default="demo")
    args = parser.parse_args(argv)
    dev = json.loads((Path(args.state) / "dev.json").read_text())
    address, keys = dev["address"], dev["api_keys"]
    scope = f"chat-{uuid.uuid4().hex[:12]}"

    with (
        VaultClient(address, api_key=keys["ai-pipeline"]) as pipeline,
        VaultClient(address, api_key=keys["support-agent"], purpose=PURPOSE) as agent,
    ):
        redacted, uncovered = pipeline.tokenize_text(args.tenant, CHAT, scope=scope)
        print(
            f"# what the model sees (scope {scope}; not detected: {', '.join(sorted(uncovered))})"
        )
        prompt = [r.text for r in redacted]
        for line in prompt:
            print("  " + line)

        answer = stand_in_llm(prompt)
        print("\n# the model's answer (tokens only)\n  " + answer)

        shown = agent.reveal_text(args.tenant, answer)
        print("\n# what the support agent sees (policy: email and card masked, phone masked)")
        print("  " + shown.text)
        for t in shown.tokens:
            state = t.error or t.output
            print(f"  - {t.field_class or '?'} token at {t.start}-{t.end}: {state} {t.reason}")
        for start, end in shown.malformed:
            print(f"  - not a token (altered by the model?) at {start}-{end}: left as is")

        grant, expires = agent.issue_grant(
            args.tenant,
            "apikey:dev-ai-pipeline",
            ["email"],
            scope=scope,
            ttl_seconds=120,
            max_uses=1,
        )
        email_token = next(s.token for s in redacted[0].spans if s.field_class == "email")
        # the agent's tool call, re-identified under the grant: a grant lends what its grantor
        # holds (the support agent holds text.reveal, not token.reveal), so the tool call is a
        # text
        tool_call = pipeline.reveal_text(
            args.tenant, f"send_receipt(to={email_token})", grant=grant
        )
        [email] = tool_call.tokens
        print(
            f"\n# the LLM agent, under a one-use grant until {expires:%H:%M:%S} UTC, "
            f"gets the email {email.output}: {tool_call.text}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
