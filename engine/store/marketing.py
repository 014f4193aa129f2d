"""Tables about the shop's marketing rather than one shopper: ad spend.

Not keyed by user: ad platforms report what a channel and campaign cost per day,
and the shop KPIs (CAC, ROAS: engine/measurement/kpis.py) divide by it.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal

from sqlalchemy import Column, Date, String
from sqlmodel import Field, SQLModel

from engine.store.placement import reference
from engine.store.types import Money, UTCDateTime


class AdSpend(SQLModel, table=True):
    """What one campaign of one channel cost on one day (shop-local calendar day).

    One row per (day, channel, campaign): re-importing a spend file replaces the
    stored cost (ad platforms restate spend for days after the fact). `campaign` is
    '' for spend not split by campaign.
    """

    __tablename__ = "ad_spend"
    __table_args__ = reference()

    day: date = Field(sa_column=Column("date", Date, primary_key=True))
    channel: str = Field(sa_column=Column(String(64), primary_key=True))
    campaign: str = Field(sa_column=Column(String(128), primary_key=True))
    # In the shop currency, converted at ingest like event amounts (engine/ingest/money.py).
    cost: Decimal = Field(sa_column=Column(Money, nullable=False))
    currency: str = Field(max_length=3)
    # What the file said, when it was another currency.
    original_cost: Decimal | None = Field(default=None, sa_column=Column(Money))
    original_currency: str | None = Field(default=None, max_length=3)
    ingested_at: datetime = Field(sa_column=Column(UTCDateTime, nullable=False))
