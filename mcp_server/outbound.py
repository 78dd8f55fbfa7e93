"""One pass over everything handed to an MCP client: secrets redacted, controls made visible.

Tool results (text blocks and structured content, errors too), resource contents and prompt
messages all go through `Outbound.clean()`: the Redactor (configured secret values and secret
shapes) and then `make_visible` (terminal escapes and bidi overrides shown, not obeyed).
The audit log, mail and the dashboard API use the same Redactor on their own paths.
"""

from __future__ import annotations

import json
from typing import Any

import mcp_types as mt
import pydantic_core
from fastmcp.exceptions import ToolError
from fastmcp.prompts.base import Message, PromptResult
from fastmcp.resources.base import ResourceContent, ResourceResult
from fastmcp.server.middleware import CallNext, Middleware, MiddlewareContext
from fastmcp.tools.base import InputRequiredToolResult, ToolResult

from mcp_server.safety.redaction import Redactor, make_visible


class Outbound:
    """Redaction and control-character marking for any JSON-like value."""

    def __init__(self, redactor: Redactor) -> None:
        self.redactor = redactor

    def text(self, text: str) -> str:
        return make_visible(self.redactor.redact_text(text))

    def clean(self, obj: Any) -> Any:
        return _visible_walk(self.redactor.redact(obj))

    def document(self, text: str) -> str:
        """A JSON document is cleaned value by value and written again; other text as text."""
        if text[:1] in ("{", "["):
            try:
                data = json.loads(text)
            except ValueError:
                return self.text(text)
            return json.dumps(self.clean(data), default=str, separators=(",", ":"))
        return self.text(text)


def _visible_walk(obj: Any) -> Any:
    if isinstance(obj, str):
        return make_visible(obj)
    if isinstance(obj, dict):
        return {_visible_walk(k): _visible_walk(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_visible_walk(v) for v in obj]
    return obj


class OutboundMiddleware(Middleware):
    """Outermost middleware: nothing reaches a client without passing `Outbound`."""

    def __init__(self, redactor: Redactor) -> None:
        self.out = Outbound(redactor)

    async def on_call_tool(
        self,
        context: MiddlewareContext[mt.CallToolRequestParams],
        call_next: CallNext[mt.CallToolRequestParams, ToolResult],
    ) -> ToolResult:
        try:
            result = await call_next(context)
        except ToolError as exc:
            raise ToolError(self.out.text(str(exc))) from None
        if isinstance(result, InputRequiredToolResult):  # a question for the client, our own
            return result
        structured = result.structured_content
        if structured is None:
            content = [self._block(b) for b in result.content]
            return ToolResult(content=content, meta=result.meta, is_error=result.is_error)
        clean = self.out.clean(structured)
        return ToolResult(
            content=self._content_for(result.content, structured, clean),
            structured_content=clean,
            meta=result.meta,
            is_error=result.is_error,
        )

    def _content_for(self, blocks: list[Any], structured: Any, clean: Any) -> list[Any]:
        """The text twin of structured content is re-serialised from the cleaned value
        (scrubbing JSON text directly could eat escaped newlines into a redacted value)."""
        if len(blocks) == 1 and isinstance(blocks[0], mt.TextContent):
            try:
                same = json.loads(blocks[0].text) == structured
            except ValueError:
                same = False
            if same:
                text = pydantic_core.to_json(clean, fallback=str).decode()
                return [blocks[0].model_copy(update={"text": text})]
        return [self._block(b) for b in blocks]

    async def on_read_resource(
        self,
        context: MiddlewareContext[mt.ReadResourceRequestParams],
        call_next: CallNext[mt.ReadResourceRequestParams, ResourceResult],
    ) -> ResourceResult:
        result = await call_next(context)
        contents = [
            ResourceContent(self.out.document(c.content), mime_type=c.mime_type, meta=c.meta)
            if isinstance(c.content, str)
            else c
            for c in result.contents
        ]
        return ResourceResult(contents, meta=result.meta)

    async def on_get_prompt(
        self,
        context: MiddlewareContext[mt.GetPromptRequestParams],
        call_next: CallNext[mt.GetPromptRequestParams, PromptResult],
    ) -> PromptResult:
        result = await call_next(context)
        messages = [Message(self._block(m.content), role=m.role) for m in result.messages]
        return PromptResult(messages, description=result.description, meta=result.meta)

    def _block(self, block: Any) -> Any:
        if isinstance(block, mt.TextContent):
            return block.model_copy(update={"text": self.out.text(block.text)})
        return block
