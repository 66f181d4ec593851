"""Embedded OpenAI-compatible endpoint that stands in for a real LLM provider.

Run it with ``python -m simulator`` (see `simulator.__main__`) or in-process with
`simulator.server.start`; the service talks to it only over HTTP.
"""
