"""The demo's sample data: one "support-bot" project, seen the same way by both vendors.

Contract: :data:`SESSIONS` is a fixed, deterministic list of support conversations (session id,
turns, and what each vendor's reviewers said about it). The same session id is the Phoenix
``session.id`` and the Datadog interaction ``content_id``, so the two vendors' annotations meet
on one subject. By design:

- sessions 01-06: both vendors have the same ``resolution`` label (and close ``helpfulness``);
- sessions 07-09: both have a ``resolution``, but the labels differ (and so do the scores);
- sessions 10-11: annotated in Phoenix only; sessions 12: in Datadog only;
- Phoenix also has an LLM judge (``helpfulness`` score with explanation) and a code check
  (``pii_check``) per session, and a ``correctness`` LLM annotation per trace (turn);
- Datadog also has ``tone`` (categorical) and free-text ``feedback``.

Names mean the same on both sides (``resolution``, ``helpfulness``), so compare/migrate can pair
them without a name map. Nothing here talks to a vendor: :mod:`annotation_gateway.demo` seeds
Phoenix and the Datadog simulator from it through their own APIs, and other tools (compare,
migrate) may reuse it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DATADOG_LABEL_SCHEMAS",
    "DATADOG_QUEUE",
    "PROJECT",
    "SESSIONS",
    "DatadogReview",
    "DemoSession",
    "PhoenixReview",
    "trace_id_for",
]

PROJECT = "support-bot"
DATADOG_QUEUE = "support-quality"
RESOLUTIONS = ("resolved", "unresolved", "escalated")
TONES = ("friendly", "neutral", "curt")

DATADOG_LABEL_SCHEMAS: list[dict[str, Any]] = [
    {
        "name": "resolution",
        "type": "categorical",
        "values": list(RESOLUTIONS),
        "description": "Did the bot resolve the customer's problem?",
        "has_reasoning": True,
    },
    {"name": "helpfulness", "type": "score", "min": 0, "max": 1, "description": "0 useless .. 1 perfect"},
    {"name": "tone", "type": "categorical", "values": list(TONES)},
    {"name": "feedback", "type": "text", "description": "Reviewer's free-text note"},
]
"""The Datadog queue's label schema (``LLMObsLabelSchema`` fields)."""


@dataclass(frozen=True, slots=True)
class PhoenixReview:
    """What Phoenix holds about one session."""

    resolution: str
    """HUMAN annotation by ``reviewer``."""
    reviewer: str
    helpfulness: float
    """LLM judge score (0..1) with ``judge_note`` as explanation."""
    judge_note: str
    pii_ok: bool
    """CODE check: no personal data echoed back."""


@dataclass(frozen=True, slots=True)
class DatadogReview:
    """What the Datadog annotation queue holds about one session (one reviewer's labels)."""

    resolution: str
    helpfulness: float
    tone: str
    feedback: str | None = None
    reasoning: str | None = None
    """Reasoning attached to the ``resolution`` label."""


@dataclass(frozen=True, slots=True)
class DemoSession:
    id: str
    topic: str
    turns: tuple[tuple[str, str], ...]
    """(customer message, bot answer) per turn; each turn is one trace."""
    phoenix: PhoenixReview | None
    datadog: DatadogReview | None
    correct_turns: tuple[bool, ...] = field(default=())
    """Phoenix ``correctness`` verdict per turn (LLM); empty when Phoenix has no review."""


def trace_id_for(session_id: str, turn: int) -> str:
    """A stable 32-hex OpenTelemetry trace id for a session's turn (the same on every run)."""
    return hashlib.sha256(f"{session_id}/{turn}".encode()).hexdigest()[:32]


def _s(n: int) -> str:
    return f"support-{n:02d}"


SESSIONS: tuple[DemoSession, ...] = (
    # --- both vendors agree on the resolution ---
    DemoSession(
        _s(1),
        "password reset",
        (
            ("I can't log in, reset my password please", "I've sent a reset link to your email."),
            ("Got it, works now. Thanks!", "Glad to help!"),
        ),
        PhoenixReview("resolved", "alice", 0.95, "Direct fix, confirmed by the customer.", True),
        DatadogReview("resolved", 1.0, "friendly", "Textbook answer."),
        (True, True),
    ),
    DemoSession(
        _s(2),
        "refund status",
        (("Where is my refund for order 1182?", "It was issued on Monday; allow 3-5 business days."),),
        PhoenixReview("resolved", "alice", 0.8, "Accurate, could link the refund policy.", True),
        DatadogReview("resolved", 0.75, "neutral"),
        (True,),
    ),
    DemoSession(
        _s(3),
        "API rate limits",
        (
            ("What's the rate limit on the search API?", "100 requests per minute per key."),
            ("Can it be raised?", "Yes, via the enterprise plan; I've opened a ticket with sales."),
        ),
        PhoenixReview("escalated", "bob", 0.7, "Correct limit; escalation to sales was right.", True),
        DatadogReview("escalated", 0.75, "friendly", reasoning="Needs a sales contact."),
        (True, True),
    ),
    DemoSession(
        _s(4),
        "invoice address",
        (("Change the billing address on my invoices", "Done: future invoices use the new address."),),
        PhoenixReview("resolved", "bob", 0.9, "Completed the change and said so.", True),
        DatadogReview("resolved", 1.0, "neutral"),
        (True,),
    ),
    DemoSession(
        _s(5),
        "data export",
        (
            ("How do I export all my data?", "Settings → Privacy → Export; you'll get a zip by email."),
            ("The email never came", "I've re-sent it to j***@example.com."),
        ),
        PhoenixReview("resolved", "alice", 0.85, "Good, masked the email address.", True),
        DatadogReview("resolved", 0.75, "friendly", "Nice masking of the address."),
        (True, True),
    ),
    DemoSession(
        _s(6),
        "outage",
        (("Is the dashboard down?", "We have an incident open; status page has updates."),),
        PhoenixReview("unresolved", "bob", 0.5, "Pointed to the status page, no ETA.", True),
        DatadogReview("unresolved", 0.5, "neutral", reasoning="Nothing the bot could do."),
        (True,),
    ),
    # --- both vendors annotated, but they disagree ---
    DemoSession(
        _s(7),
        "plan downgrade",
        (
            ("Downgrade me to the free plan", "Your plan will change at the end of the billing cycle."),
            ("I want it now", "Immediate downgrades need a support agent; I've created a ticket."),
        ),
        PhoenixReview("escalated", "alice", 0.6, "Handed off correctly.", True),
        DatadogReview("unresolved", 0.25, "curt", "Customer wanted it now; bot refused.", "Not done."),
        (True, True),
    ),
    DemoSession(
        _s(8),
        "two-factor auth",
        (("I lost my phone, how do I get past 2FA?", "Use one of your backup codes on the login page."),),
        PhoenixReview("resolved", "bob", 0.75, "Right answer if they have codes.", True),
        DatadogReview("unresolved", 0.5, "neutral", "Didn't cover the no-backup-codes case."),
        (True,),
    ),
    DemoSession(
        _s(9),
        "GDPR deletion",
        (("Delete my account and all data", "Your account john.doe@example.com is scheduled for deletion."),),
        PhoenixReview("resolved", "alice", 0.4, "Echoed the full email address back.", False),
        DatadogReview("escalated", 0.5, "neutral", reasoning="Deletion requests go to privacy team."),
        (False,),
    ),
    # --- Phoenix only ---
    DemoSession(
        _s(10),
        "webhook retries",
        (("Do webhooks retry on failure?", "Yes, with exponential backoff for up to 24 hours."),),
        PhoenixReview("resolved", "bob", 0.9, "Accurate and complete.", True),
        None,
        (True,),
    ),
    DemoSession(
        _s(11),
        "SSO setup",
        (
            ("How do I set up SAML SSO?", "Go to Admin → Security → SSO and upload your IdP metadata."),
            ("Where do I find the ACS URL?", "Same page, under 'Service provider details'."),
        ),
        PhoenixReview("resolved", "alice", 0.85, "Clear steps.", True),
        None,
        (True, True),
    ),
    # --- Datadog only ---
    DemoSession(
        _s(12),
        "cancel subscription",
        (("Cancel my subscription", "I'm sorry to see you go! Can I offer you 50% off instead?"),),
        None,
        DatadogReview("unresolved", 0.25, "friendly", "Pushed a retention offer instead of cancelling."),
    ),
)
"""The demo's conversations, in session order."""
