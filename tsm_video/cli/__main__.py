"""``python -m tsm_video.cli`` (e.g. under ``accelerate launch -m tsm_video.cli train ...``)."""

import sys

from tsm_video.cli import main

sys.exit(main())
