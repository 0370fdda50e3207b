"""The ``vllm`` generation backend: ``generator`` (core env) drives ``worker`` (vLLM stack)
through ``client``. Nothing is imported here, so the worker starts without torch-side code."""
