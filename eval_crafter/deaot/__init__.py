"""DeAOT (R50-DeAOT-L), the tracker of EvalCrafter's Count and Color, written natively.

``model.py`` is the network (ResNet-50 stages 1-3, the dual-branch gated propagation
transformer, the FPN decoder, the identity bank); its state-dict keys are those of the
official ``R50_DeAOTL_PRE_YTB_DAV.pth``, which loads strictly. ``engine.py`` keeps the
long- and short-term memories of one group of up to 10 objects and combines groups;
``tracker.py`` is what ``SegTracker`` calls: the frame preprocessing, reference frames,
tracking and memory updates. Parity with the official aot code (random weights, small
inputs) is checked against fixtures made by ``tests/tools/make_deaot_fixtures.py``.
"""

from eval_crafter.deaot.engine import MAX_OBJECTS_PER_GROUP, DeAOTEngine
from eval_crafter.deaot.model import DeAOT, load_deaot
from eval_crafter.deaot.tracker import DeAOTTracker, preprocess_frame, tracker_input_size

__all__ = [
    "DeAOT",
    "DeAOTEngine",
    "DeAOTTracker",
    "MAX_OBJECTS_PER_GROUP",
    "load_deaot",
    "preprocess_frame",
    "tracker_input_size",
]
