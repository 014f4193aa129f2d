"""A deterministic synthetic shop for `nudge demo`: users and events as JSONL files.

The same seed and `now` give byte-identical files. The shop sells in CNY from
Asia/Shanghai; about 5,000 shoppers arrive over the 180 days before `now` and walk a
believable funnel (visits -> signup -> first purchase -> repeat purchases), some go
quiet and lapse, and a small cohort of long-standing members (signed up long before
the window) supplies the lapsed and churned stages, so every stage is populated.
The files are ingested through the ordinary ingest path (`engine.ingest`).

History is seeded before the rules run, so it cannot show what a rule did. The demo's
story is told afterwards: `build_demo` gives one example rule a control group
(`DEMO_HOLDOUTS`), and once the demo's tick has planned and delivered,
`simulate_responses` (`nudge demo --respond`) has the shoppers answer: purchases,
ingested through the same path, with a higher chance for the treated users of
`first-purchase-thank-you` than for its held-out ones (a real effect) and the same
chance for both groups of `winback-lapsed-members` (no effect), some paid with the
rule's coupon code. `nudge report` then measures both.
"""

from engine.demo.build import add_demo_holdouts, build_demo
from engine.demo.responses import RESPONSE_PERIOD, simulate_responses
from engine.demo.shop import write_demo_files

__all__ = [
    "RESPONSE_PERIOD",
    "add_demo_holdouts",
    "build_demo",
    "simulate_responses",
    "write_demo_files",
]
