"""Rating backends: one module per backend, registered in `BACKENDS` by the import lines below."""

from fedcurate.common.rating.backends import openai_http, transformers_local, vllm_server  # noqa: F401
