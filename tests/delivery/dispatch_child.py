"""A dispatcher process for the crash test: `python dispatch_child.py PROJECT_DIR NOW`.

Runs batches of 5 through the real HTTP channel until nothing is due; the test kills
it with SIGKILL while a request is in flight.
"""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path

from engine.config import load_settings
from engine.delivery.channels import ChannelSet
from engine.delivery.channels.http import HttpChannel
from engine.delivery.dispatcher import dispatch_until_idle
from engine.store import open_store

if __name__ == "__main__":
    store = open_store(load_settings(Path(sys.argv[1])))
    channels = ChannelSet({"webhook": HttpChannel(timeout=60)})
    now = datetime.fromisoformat(sys.argv[2])
    print("started", flush=True)
    dispatch_until_idle(store, now=now, worker_id="child", channels=channels, batch_size=5)
