"""tiergate's gateway: an OpenAI-compatible routing proxy for tiered LLM access."""
