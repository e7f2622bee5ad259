"""Actions of the document pipeline (examples/documents/fsm.yaml).

The user context: ``{"text": "# Title\\nBody ...", "max_rounds": 5}``. Extraction
splits title and body, normalization cleans typography and whitespace, the
reviewer lists concrete issues, and each revision round fixes the first one,
so a messy draft loops review -> revise -> review a few times before it is
approved, while one that cannot be fixed runs out of rounds and is rejected.
Started with no text, a machine reviews a built-in demo draft.
"""

from __future__ import annotations

import hashlib
import re

from fsmlog import Action

MAX_SENTENCE_WORDS = 25
MAX_TITLE_CHARS = 80
MIN_WORDS = 8
DEFAULT_MAX_ROUNDS = 5
MARKERS = ("TODO", "FIXME", "TBD", "XXX")

DEMO_TEXT = (
    "release notes for the the event log\n\n"
    "The worker now claims batches of the log, and a batch that fails is handed back from its first failed "
    "record, so a crashed worker loses nothing and no record is handled twice by two workers at the same time. "
    "TODO: mention the metrics. Snapshots are written every ten steps.\n"
)

_SENTENCE = re.compile(r"[^.!?]+[.!?]*")
_MARKER = re.compile(r"\b(" + "|".join(MARKERS) + r")\b")
_REPEAT = re.compile(r"\b(\w+)(\s+\1\b)+", re.IGNORECASE)
_QUOTES = str.maketrans({"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2013": "-",
                         "\u2014": " - ", "\u00a0": " ", "\u2026": "..."})


def sentences(body: str) -> list[str]:
    return [s.strip() for s in _SENTENCE.findall(body) if s.strip()]


def find_issues(title: str | None, body: str) -> list[str]:
    """What a reviewer would send back, most important first."""
    issues = []
    words = body.split()
    if len(words) < MIN_WORDS:
        issues.append(f"too short: {len(words)} words, at least {MIN_WORDS} needed")
    if not title:
        issues.append("missing title")
    elif len(title) > MAX_TITLE_CHARS:
        issues.append(f"title longer than {MAX_TITLE_CHARS} characters")
    elif title[0].islower():
        issues.append("title should start with a capital letter")
    for marker in sorted(set(_MARKER.findall(body))):
        issues.append(f"unfinished marker {marker}")
    for text in (title or "", body):
        m = _REPEAT.search(text)
        if m:
            issues.append(f"repeated word {m.group(1)!r}")
            break
    for s in sentences(body):
        n = len(s.split())
        if n > MAX_SENTENCE_WORDS:
            issues.append(f"sentence of {n} words (max {MAX_SENTENCE_WORDS}): {s[:40]}...")
    return issues


def _split_sentence(sentence: str) -> str:
    """Split a long sentence at the clause break nearest its middle."""
    words = sentence.rstrip(".!?").split()
    middle = len(words) // 2
    breaks = [i for i, w in enumerate(words[:-1]) if w.endswith(",") or words[i + 1] in ("and", "so", "but")]
    cut = min(breaks, key=lambda i: abs(i - middle)) if breaks else middle
    first = " ".join(words[: cut + 1]).rstrip(",")
    rest = words[cut + 1:]
    if rest and rest[0] in ("and", "so", "but"):
        rest = rest[1:]
    second = " ".join(rest)
    return f"{first}. {second[:1].upper()}{second[1:]}."


def revise(title: str | None, body: str, issue: str) -> tuple[str | None, str]:
    """Fix one issue; returns the new (title, body). Issues no edit can fix leave the text unchanged."""
    if issue == "missing title":
        first = sentences(body)[0] if sentences(body) else body
        return " ".join(first.rstrip(".!?").split()[:6]).capitalize(), body
    if issue.startswith("title longer"):
        return title[:MAX_TITLE_CHARS].rsplit(" ", 1)[0], body
    if issue.startswith("title should start"):
        return title[:1].upper() + title[1:], body
    if issue.startswith("unfinished marker"):
        kept = [s for s in sentences(body) if not _MARKER.search(s)]
        return title, " ".join(kept)
    if issue.startswith("repeated word"):
        return (_REPEAT.sub(r"\1", title) if title else title), _REPEAT.sub(r"\1", body)
    if issue.startswith("sentence of"):
        out = []
        done = False
        for s in sentences(body):
            if not done and len(s.split()) > MAX_SENTENCE_WORDS:
                s, done = _split_sentence(s), True
            out.append(s)
        return title, " ".join(out)
    return title, body


class Extract(Action):
    def execute(self, context, obj):
        text = context.setdefault("text", DEMO_TEXT)
        if not isinstance(text, str) or not text.strip():
            context["rejection"] = "no text to review"
            return "unreadable"
        lines = text.replace("\r\n", "\n").split("\n")
        head = lines[0].strip()
        if head.startswith("#") or (len(lines) > 1 and not lines[1].strip() and len(head) <= 120):
            context["title"] = head.lstrip("#").strip() or None
            body = "\n".join(lines[1:])
        else:
            context["title"] = None
            body = text
        context["body"] = body
        del context["text"]  # keep one copy of the text in the context (it travels with every record)
        return "extracted"


class Normalize(Action):
    def execute(self, context, obj):
        body = context["body"].translate(_QUOTES)
        paragraphs = [" ".join(p.split()) for p in re.split(r"\n\s*\n", body)]
        context["body"] = "\n\n".join(p for p in paragraphs if p)
        if context.get("title"):
            context["title"] = " ".join(context["title"].translate(_QUOTES).split())
        context["words"] = len(context["body"].split())
        return "normalized"


class Review(Action):
    def execute(self, context, obj):
        issues = find_issues(context.get("title"), context["body"])
        context["issues"] = issues
        if not issues:
            return "approved"
        if context.get("revisions", 0) >= int(context.get("max_rounds", DEFAULT_MAX_ROUNDS)):
            context["rejection"] = f"still {len(issues)} issue(s) after {context.get('revisions', 0)} round(s): " \
                                   + "; ".join(issues)
            return "too_many_rounds"
        return "changes_requested"


class CountRound(Action):
    def execute(self, context, obj):
        context["revisions"] = context.get("revisions", 0) + 1


class Revise(Action):
    def execute(self, context, obj):
        issue = context["issues"][0]
        title, body = revise(context.get("title"), context["body"], issue)
        context["title"], context["body"] = title, body
        context.setdefault("changes", []).append(issue)
        context["words"] = len(body.split())
        return "revised"


class Publish(Action):
    def execute(self, context, obj):
        title = context["title"]
        slug = re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        context["published"] = {
            "slug": slug,
            "version": context.get("revisions", 0) + 1,
            "sha256": hashlib.sha256(f"{title}\n\n{context['body']}".encode()).hexdigest(),
            "words": context["words"],
        }
        return "published"
