"""MCP prompts; templates live beside the code as *.md so operators can edit them."""
