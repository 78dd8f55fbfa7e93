"""MCP prompts: rca(incident_id) and triage(scope). Templates are the *.md files beside this
module so operators can edit them; $placeholders are filled with string.Template."""

from prompts.registry import register

__all__ = ["register"]
