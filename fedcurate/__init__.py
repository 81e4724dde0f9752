"""fedcurate: federated selection of LLM instruction-tuning data and federated LoRA fine-tuning, on Flower.

Layers, each importing only the ones below it (checked by `lint-imports` in `make test`):

    fedcurate.app, fedcurate.simulations    command line, centralized mode, simulation runner, demo, report, benchmarks
    fedcurate.server | fedcurate.client     the coordinator's phases | a site's steps (never each other)
    fedcurate.strategies                    Flower strategies and aggregation maths
    fedcurate.common                        building blocks and the protocol (`fedcurate.common.protocol`)
"""
