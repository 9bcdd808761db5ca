"""The request pipeline: context, the attempt loop, stream stages and end-of-response hooks."""

from sluice.pipeline.context import Attempt, RequestContext
from sluice.pipeline.core import Pipeline
from sluice.pipeline.stages import Hook, Stage
from sluice.pipeline.stream import ResponseStream

__all__ = ["Attempt", "Hook", "Pipeline", "RequestContext", "ResponseStream", "Stage"]
