"""Training dynamics (CLUES): LoRA checkpoints, exact batched per-sample gradient scores, and baselines.

    checkpoints.py  save / load a checkpoint: adapter, Adam state keyed by parameter name, learning rates
    scoring.py      the scoring model (PeftModel + tokenizer + template) and length-sorted batches
    gradients.py    per-sample LoRA gradients of a batch from layer activations and output gradients
    clues.py        CLUES scores (TracIn-CP with Adam preconditioning) and the anchor threshold rule
    datainf.py      DataInf closed-form influence, per LoRA module
    less.py         LESS-style cosine of randomly projected, preconditioned gradients
    naive.py        the batch-size-1 reference loop (tests and the benchmark compare against it)
    prepare.py      train the checkpoints for a config, load the scoring model and the anchor set
"""
