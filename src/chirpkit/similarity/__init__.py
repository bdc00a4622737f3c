"""Search by example: an embedding index of a recording archive (:mod:`~chirpkit.similarity.db`),
built by :func:`~chirpkit.similarity.build.index`, searched by
:func:`~chirpkit.similarity.query.search`, and heads trained on its embeddings
(:func:`~chirpkit.similarity.head.train_head`)."""
