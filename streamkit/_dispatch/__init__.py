"""The machinery behind :class:`streamkit.Dispatcher`; private.

- ``pool``: the fixed pool of worker threads and the jobs it runs;
- ``fanout``: one ``map``/``events`` call: lazy input, the merged channel
  its streams report into, and their jobs;
- ``embed``: ``EmbedCall``, an embed request as a job (no chunks);
- ``task``: the ``Task`` protocol a job runs (a Stream or an EmbedCall).
"""
