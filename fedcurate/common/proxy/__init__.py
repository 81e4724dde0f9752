"""Proxy quality classifier (FineWeb-Edu style): a head on frozen sentence embeddings, trained on a
sample of LLM ratings, that scores a whole corpus cheaply.

    head.py     the linear regression head: training, metrics, export/import, FedAvg of heads
    train.py    `fedcurate proxy train`: join samples and ratings, embed, train, report on a validation split
    stream.py   a corpus as a stream of Sample chunks with a resumable cursor
    scoring.py  `fedcurate proxy score`: bounded-memory, resumable scoring with a threshold filter
"""
