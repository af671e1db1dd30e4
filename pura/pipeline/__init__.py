"""The identification and enrolment pipeline: protocol steps composed, no I/O.

Layering: ``crypto ← protocols ← pipeline ← service``. The server, the benchmarks and the
privacy audit all drive these objects, so the thing measured is the thing shipped.
"""

from pura.pipeline.channel import (
    Exchange,
    HelperCall,
    HelperChannel,
    MemoryRecorder,
    Recorder,
)
from pura.pipeline.config import (
    DEFAULT_THRESHOLD_SQ,
    DEFAULT_TOP_K,
    DEFAULT_VIEW_K,
    SearchConfig,
)
from pura.pipeline.enroll import Enroller
from pura.pipeline.gallery import GalleryIndex
from pura.pipeline.identify import Identifier, TemplateSource

__all__ = [
    "DEFAULT_THRESHOLD_SQ",
    "DEFAULT_TOP_K",
    "DEFAULT_VIEW_K",
    "Enroller",
    "Exchange",
    "GalleryIndex",
    "HelperCall",
    "HelperChannel",
    "Identifier",
    "MemoryRecorder",
    "Recorder",
    "SearchConfig",
    "TemplateSource",
]
