"""Input schema v1: raw Kafka bytes -> validated :class:`~streams.contracts.records.Item`.

Every way an input can be wrong maps to one :class:`BadInput` with a reason a
person can act on; the worker sends it to the dead-letter topic and moves on.
The JSON Schema document in ``streams/contracts/schemas/item-v1.json`` is generated from
:class:`ItemV1` (``finsentry schema``) and checked against it by the tests.
"""

from __future__ import annotations

import json
import re
import string
from datetime import datetime, timezone
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    model_validator,
)

from streams.contracts.records import Item, Stage, trusted

__all__ = ["ItemV1", "BadInput", "parse_item", "json_schema", "normalise_ticker", "SCHEMA_VERSION",
           "MAX_TICKERS", "MAX_MESSAGE_BYTES", "EARLIEST", "LATEST"]

SCHEMA_VERSION = 1
#: Tickers one item may name: each becomes a point and a tag value, so an item cannot fan out without bound.
MAX_TICKERS = 20
#: Larger messages are dead-lettered before they are parsed (the text limit is far below this).
MAX_MESSAGE_BYTES = 1_048_576
#: ``published_at`` range: InfluxDB stores nanoseconds since 1970 in 64 bits (up to 2262-04-11).
EARLIEST = datetime(1900, 1, 1, tzinfo=timezone.utc)
LATEST = datetime(2262, 1, 1, tzinfo=timezone.utc)
_TICKER = re.compile(r"^[A-Z0-9][A-Z0-9.\-]{0,14}(:[A-Z0-9][A-Z0-9.\-]{0,14})?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class BadInput(ValueError):
    """An input that cannot be scored; ``reason`` goes to the dead-letter topic."""

    def __init__(self, stage: Stage, reason: str, item_id: str | None = None) -> None:
        super().__init__(reason)
        self.stage = stage
        self.reason = reason
        self.item_id = item_id


def normalise_ticker(value: str) -> str:
    """The one ticker normalisation: trim, drop a leading ``$``, upper-case ASCII; anything that is
    not then an ASCII symbol (``A-Z 0-9 . -``, optional ``EXCHANGE:``) is refused, never folded.

    >>> normalise_ticker(" $brk.b ")
    'BRK.B'
    >>> normalise_ticker("ß")
    Traceback (most recent call last):
    ...
    ValueError: not a ticker symbol: 'ß'
    """
    symbol = value.strip(string.whitespace).removeprefix("$")  # ASCII whitespace only: U+2028 is not trimmed
    if not symbol.isascii():  # "ß".upper() == "SS", "ﬀ".upper() == "FF": never store what was not sent
        raise ValueError(f"not a ticker symbol: {value!r}")
    symbol = symbol.upper()
    if not _TICKER.match(symbol):
        raise ValueError(f"not a ticker symbol: {value!r}")
    return symbol


def _clean_id(value: str) -> str:
    if _CONTROL.search(value) or value != value.strip():
        raise ValueError("id must not contain control characters or surrounding spaces")
    return value


def _tag_safe(value: str) -> str:
    # An InfluxDB tag value stores control characters and a backslash before the end or a separator
    # altered; refuse them so that what is stored is what was sent.
    if not value.strip():
        raise ValueError("must not be blank")
    if _CONTROL.search(value) or "\\" in value:
        raise ValueError("must not contain control characters or backslashes")
    return value


def _event_time(value: datetime) -> datetime:
    if not EARLIEST <= value < LATEST:
        raise ValueError(f"must be between {EARLIEST:%Y-%m-%d} and {LATEST:%Y-%m-%d}")
    return value


Ticker = Annotated[str, AfterValidator(normalise_ticker)]


class ItemV1(BaseModel):
    """A news item or social post as published on the input topics (schema v1)."""

    model_config = ConfigDict(strict=True, extra="ignore", title="finsentry item v1")

    schema_version: Literal[1] = 1
    id: Annotated[str, AfterValidator(_clean_id)] = Field(
        min_length=1, max_length=256, description="unique item id; also the Kafka key"
    )
    source: Annotated[str, AfterValidator(_tag_safe)] = Field(
        min_length=1, max_length=128,
        description="wire or platform, e.g. 'reuters', 'x'; no control characters or backslashes")
    published_at: Annotated[AwareDatetime, AfterValidator(_event_time)] = Field(
        description="event time, RFC 3339 with offset, years 1900-2261")
    headline: str | None = Field(None, description="news headline (news items)")
    text: str | None = Field(None, description="post text (social posts)")
    body: str | None = Field(None, description="article body or lede")
    url: str | None = Field(None, max_length=2048)
    author: str | None = Field(None, max_length=256)
    tickers: list[Ticker] = Field(default_factory=list, max_length=MAX_TICKERS,
                                  description="symbols the item is about (ASCII, see normalise_ticker)")
    lang: str | None = Field(None, max_length=16, description="BCP 47 language tag")

    @model_validator(mode="after")
    def _has_text(self) -> "ItemV1":
        if not any((value or "").strip() for value in (self.headline, self.text, self.body)):
            raise ValueError("empty text: headline, text and body are all missing or blank")
        return self


def _describe(error: ValidationError) -> str:
    parts = []
    for err in error.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "item"
        message = err["msg"]
        if err["type"] == "missing":
            message = "required field is missing"
        parts.append(f"{where}: {message}")
    more = len(error.errors()) - 5
    if more > 0:
        parts.append(f"... and {more} more")
    return "invalid item: " + "; ".join(parts)


def _probable_id(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("id"), str):
        return data["id"][:256]
    return None


def _rejection(text: str, error: ValidationError) -> BadInput:
    """Why ``text`` failed validation, read again with the standard parser for a reason a person can act
    on: where the JSON breaks, a wrong ``schema_version``, else pydantic's own errors; with the id."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        return BadInput("decode", f"malformed JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")
    if not isinstance(data, dict):
        return BadInput("decode", f"malformed item: expected a JSON object, got {type(data).__name__}")
    version = data.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        return BadInput("validate", f"unsupported schema_version {version!r} (this worker reads {SCHEMA_VERSION})",
                        _probable_id(data))
    return BadInput("validate", _describe(error), _probable_id(data))


def parse_item(value: bytes | None, *, kind: str, max_text_chars: int,
               max_message_bytes: int = MAX_MESSAGE_BYTES) -> Item:
    """Decode and validate one message value, or raise :class:`BadInput` (never anything else)."""
    try:
        return _parse(value, kind=kind, max_text_chars=max_text_chars, max_message_bytes=max_message_bytes)
    except BadInput:
        raise
    except RecursionError:
        raise BadInput("decode", "malformed JSON: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - one bad message must cost one dead letter, whatever it is
        raise BadInput("decode", f"unreadable message: {type(exc).__name__}: {str(exc)[:200]}") from None


def _parse(value: bytes | None, *, kind: str, max_text_chars: int, max_message_bytes: int) -> Item:
    if value is None:
        raise BadInput("decode", "empty message: value is null (tombstone)")
    if len(value) > max_message_bytes:
        raise BadInput("decode", f"message too large: {len(value)} bytes > limit {max_message_bytes}")
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInput("decode", f"undecodable bytes: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        # pydantic's parser is strict JSON (RFC 8259, plus NaN/Infinity): what it accepts, Python's accepts
        # too, so a valid item is parsed once; only a refused one is read again, for the reason
        parsed = ItemV1.model_validate_json(text, strict=True)
    except ValidationError as exc:
        raise _rejection(text, exc) from None
    total = sum(len(v or "") for v in (parsed.headline, parsed.text, parsed.body))
    if total > max_text_chars:
        raise BadInput("validate", f"text too long: {total} characters > limit {max_text_chars}", parsed.id)
    return trusted(Item, dict(
        id=parsed.id,
        source=parsed.source,
        published_at=parsed.published_at,
        kind=kind,
        headline=parsed.headline,
        text=parsed.text,
        body=parsed.body,
        url=parsed.url,
        author=parsed.author,
        tickers=list(dict.fromkeys(parsed.tickers)),
        lang=parsed.lang,
    ))


def json_schema() -> dict[str, Any]:
    """The published JSON Schema document for input items."""
    schema = ItemV1.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "https://finsentry.dev/schemas/item-v1.json"
    schema["description"] = (
        "A news item or social post on the input topics. Kafka key = id (UTF-8). "
        "At least one of headline, text, body must be non-blank. Unknown fields are ignored."
    )
    return schema
