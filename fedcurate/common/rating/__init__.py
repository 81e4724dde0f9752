"""LLM rating: backends (transformers, vLLM server, OpenAI-compatible HTTP), prompts, parsing, SelectIT."""
