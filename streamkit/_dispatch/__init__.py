"""The machinery behind :class:`streamkit.Dispatcher`; private.

- ``pool``: the fixed pool of worker threads and the jobs it runs;
- ``fanout``: one ``map``/``events`` call: lazy input, the merged channel
  its streams report into, and their jobs.
"""
