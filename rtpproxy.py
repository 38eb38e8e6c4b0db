#!/usr/bin/env python3
"""rtpproxy: RTP media relay. Entry point for the daemon and its helper tools."""

from gevent import monkey

monkey.patch_all()

import os  # noqa: E402
import sys  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.realpath(__file__)), "lib"))

from rtpp.main import entry  # noqa: E402

if __name__ == "__main__":
    sys.exit(entry(sys.argv))
